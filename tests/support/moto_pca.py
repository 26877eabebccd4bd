"""moto's ACM PCA (and S3) server, in this process, with request signatures checked, as the AWS Private CA peer.

moto runs as a real HTTP server (``moto.server.ThreadedMotoServer``) on 127.0.0.1: the code under
test (and ``issuer`` subprocesses) reach it over HTTP exactly as they reach AWS. It runs *in this
process* so that a test can extend moto's ACM PCA backend where moto falls short of Private CA:

- moto's ``IssueCertificate`` ignores ``ApiPassthrough`` and ``Validity`` (its docstring says so):
  it copies the CSR's subject and SANs and makes every leaf valid for a year. A test that wants
  Private CA's behaviour calls :meth:`MotoPca.honour_passthrough`, which replaces moto's
  ``issue_certificate`` handler (in this process only) with one that applies the
  ``EndEntityClientAuthCertificate_APIPassthrough/V1`` template as AWS documents it: subject and
  SANs from the passthrough, CA:FALSE, AKI, SKI, KeyUsage digitalSignature, EKU clientAuth, the
  CRL distribution point, and the ABSOLUTE validity asked for. Without it, plain moto answers.
- moto publishes no CRL. :meth:`MotoPca.publish_crl` does what Private CA does on its schedule:
  a CRL of the CA's revocations, signed with the CA's key, written to ``crl/<CA id>.crl`` in the
  CA's bucket.

Authentication: the first requests (creating an IAM user, its key and an allow-all policy) go
through unauthenticated; every later request must carry a valid SigV4 signature of that key
(moto recomputes it), so a wrong key or signature is refused as AWS refuses it.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from moto import settings as moto_settings
from moto.acmpca import models as pca_models
from moto.acmpca.exceptions import InvalidStateException
from moto.acmpca.responses import ACMPCAResponse
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from ca.hierarchy import CertifiedKey
from ca.profile import issuing_builder
from tests.support.moto_server import free_port

__all__ = ["MotoPca", "PcaCa", "moto_pca"]

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "eu-west-1"
_SETUP_REQUESTS = 3  # CreateUser, CreateAccessKey, PutUserPolicy


@dataclass(frozen=True, slots=True)
class PcaCa:
    """A Private CA made in moto and installed: its ARN, id, certificate (signed by a test root) and bucket."""

    arn: str
    ca_id: str
    certificate: x509.Certificate
    root: CertifiedKey
    bucket: str


@dataclass
class MotoPca:
    url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    monkeypatch: pytest.MonkeyPatch = field(repr=False)

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables that make boto3 (here or in a child process) reach this moto as this user."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_ACM_PCA": self.url,
            "AWS_ENDPOINT_URL_S3": self.url,
        }

    def client(self, service: str, **kwargs: Any) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=kwargs.pop("access_key_id", self.access_key_id),
            aws_secret_access_key=kwargs.pop("secret_access_key", self.secret_access_key),
            **kwargs,
        )

    def create_ca(
        self,
        root: CertifiedKey,
        *,
        common_name: str = "Machines PCA",
        crl: bool = True,
        intermediate: CertifiedKey | None = None,
    ) -> PcaCa:
        """Create a subordinate CA in moto, sign its CSR with ``root`` — or ``intermediate``, itself under ``root``
        — (pathlen 0) and import the certificate with its chain."""
        pca, s3 = self.client("acm-pca"), self.client("s3")
        bucket = f"pca-crl-{os.urandom(4).hex()}"
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        revocation: dict[str, Any] = {
            "CrlConfiguration": {"Enabled": crl, "ExpirationInDays": 7, **({"S3BucketName": bucket} if crl else {})}
        }
        arn = pca.create_certificate_authority(
            CertificateAuthorityConfiguration={
                # moto makes an RSA-2048 key whatever this says.
                "KeyAlgorithm": "EC_prime256v1",
                "SigningAlgorithm": "SHA256WITHECDSA",
                "Subject": {"Organization": "Example Corp", "CommonName": common_name},
            },
            RevocationConfiguration=revocation,
            CertificateAuthorityType="SUBORDINATE",
        )["CertificateAuthorityArn"]
        csr = x509.load_pem_x509_csr(pca.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"].encode())
        now = datetime.now(UTC)
        signer = intermediate or root
        certificate = issuing_builder(
            csr.public_key(),  # type: ignore[arg-type]
            issuer=signer.certificate,
            common_name=common_name,
            organization="Example Corp",
            not_before=now - timedelta(minutes=5),
            not_after=now + timedelta(days=365),
        ).sign(signer.key, hashes.SHA384())
        assert certificate.subject == csr.subject  # the leaves moto signs name the CA by its configured subject
        chain = [root.certificate] if intermediate is None else [root.certificate, intermediate.certificate]
        pca.import_certificate_authority_certificate(
            CertificateAuthorityArn=arn,
            Certificate=certificate.public_bytes(serialization.Encoding.PEM),
            # Root first: the order Private CA's own chains come in is not relied on by the issuer.
            CertificateChain=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
        )
        return PcaCa(arn=arn, ca_id=arn.rsplit("/", 1)[1], certificate=certificate, root=root, bucket=bucket)

    def authority(self, arn: str) -> Any:
        """moto's own record of the CA (this process's backend)."""
        return pca_models.acmpca_backends[ACCOUNT_ID][REGION].describe_certificate_authority(arn)

    def revoked_serials(self, arn: str) -> dict[str, str]:
        """What RevokeCertificate told moto: serial as sent → reason."""
        return {k: v["revocation_reason"] for k, v in self.authority(arn).revoked_certificates.items()}

    def honour_passthrough(self) -> None:
        """From now on (this test), IssueCertificate applies the API passthrough and the validity as Private CA does."""
        self.monkeypatch.setattr(ACMPCAResponse, "issue_certificate", _honouring_issue_certificate)

    def throttle(self, calls: int) -> None:
        """The next ``calls`` IssueCertificate requests are throttled (with :meth:`honour_passthrough`)."""
        self.monkeypatch.setitem(_THROTTLE, "remaining", calls)

    def publish_crl(self, ca: PcaCa, *, now: datetime | None = None) -> x509.CertificateRevocationList:
        """Private CA's scheduled CRL: the CA's revocations, signed by its key, written to its bucket as DER."""
        authority = self.authority(ca.arn)
        at = (now or datetime.now(UTC)).replace(microsecond=0)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.certificate.subject)
            .last_update(at)
            .next_update(at + timedelta(days=7))
            .add_extension(x509.CRLNumber(len(authority.revoked_certificates) + 1), critical=False)
        )
        for serial in authority.revoked_certificates:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial.replace(":", ""), 16))
                .revocation_date(at)
                .build()
            )
        crl = builder.sign(authority.key, hashes.SHA256())
        self.client("s3").put_object(
            Bucket=ca.bucket, Key=f"crl/{ca.ca_id}.crl", Body=crl.public_bytes(serialization.Encoding.DER)
        )
        return crl


@contextmanager
def moto_pca() -> Iterator[MotoPca]:
    """moto's server in a thread of this process, authenticating every request after the IAM set-up."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logging.getLogger("werkzeug"), "level", logging.WARNING)  # no line per request
        mp.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", _SETUP_REQUESTS)
        mp.setattr(ActionAuthenticatorMixin, "request_count", 0)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(key, raising=False)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        url = f"http://127.0.0.1:{port}"
        _reset(url)  # moto's backends live in this process: start from nothing
        try:
            iam = boto3.client(
                "iam",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id="AKIASETUPSETUPSETUP0",
                aws_secret_access_key="setup",
            )
            iam.create_user(UserName="issuer")
            key = iam.create_access_key(UserName="issuer")["AccessKey"]
            allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            iam.put_user_policy(UserName="issuer", PolicyName="all", PolicyDocument=json.dumps(allow))
            moto = MotoPca(url, key["AccessKeyId"], key["SecretAccessKey"], mp)
            for name, value in moto.env().items():
                mp.setenv(name, value)
            yield moto
        finally:
            _reset(url)  # and leave nothing for the next test
            server.stop()


def _reset(url: str) -> None:
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=10).read()


def _honouring_issue_certificate(self: ACMPCAResponse) -> ActionResult:
    """moto's IssueCertificate handler, with the API passthrough template and the validity applied."""
    arn = self._get_param("CertificateAuthorityArn")
    template = self._get_param("TemplateArn")
    csr = x509.load_pem_x509_csr(_bytes(self._get_param("Csr")))
    authority = self.acmpca_backend.describe_certificate_authority(arn)
    if _THROTTLE["remaining"] > 0:
        _THROTTLE["remaining"] -= 1
        raise JsonRESTError("ThrottlingException", "Rate exceeded")
    if authority.status != "ACTIVE":  # Private CA refuses; moto's own handler does not look
        raise InvalidStateException(arn)
    if template != "arn:aws:acm-pca:::template/EndEntityClientAuthCertificate_APIPassthrough/V1":
        raise AssertionError(f"this test extension knows only the client-auth passthrough template, not {template}")
    passthrough = self._get_param("ApiPassthrough") or {}
    now = datetime.now(UTC).replace(microsecond=0)
    not_before = _time(self._get_param("ValidityNotBefore"), now=now) or now
    not_after = _time(self._get_param("Validity"), now=now)
    assert not_after is not None, "Validity is required"
    ca_certificate = authority.certificate
    builder = (
        x509.CertificateBuilder()
        .serial_number(x509.random_serial_number())
        .issuer_name(ca_certificate.subject)
        .subject_name(_subject(passthrough.get("Subject")) or csr.subject)
        .public_key(csr.public_key())  # type: ignore[arg-type]
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)  # type: ignore[arg-type]
        .add_extension(_digital_signature(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    names = _general_names((passthrough.get("Extensions") or {}).get("SubjectAlternativeNames") or [])
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    crl_config = authority.revocation_configuration.get("CrlConfiguration") or {}
    if crl_config.get("Enabled"):
        uri = f"http://{crl_config['S3BucketName']}.s3.amazonaws.com/crl/{authority.id}.crl"
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(uri)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    leaf = builder.sign(authority.key, hashes.SHA256())
    certificate_arn = f"{arn}/certificate/{os.urandom(16).hex()}"
    authority.issued_certificates[certificate_arn] = leaf.public_bytes(serialization.Encoding.PEM)
    authority.issued_certificates_certificate_chains[certificate_arn] = authority.certificate_bytes
    return ActionResult({"CertificateArn": certificate_arn})


# IssueCertificate calls the extension answers with ThrottlingException before signing again.
_THROTTLE: dict[str, int] = {"remaining": 0}


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _time(validity: Mapping[str, Any] | None, *, now: datetime) -> datetime | None:
    if not validity:
        return None
    kind, value = validity["Type"], int(validity["Value"])
    if kind == "ABSOLUTE":
        return datetime.fromtimestamp(value, UTC)
    if kind == "DAYS":
        return now + timedelta(days=value)
    raise AssertionError(f"validity type {kind} is not part of this test extension")


_SUBJECT_FIELDS = (
    ("Country", NameOID.COUNTRY_NAME),
    ("Organization", NameOID.ORGANIZATION_NAME),
    ("OrganizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("State", NameOID.STATE_OR_PROVINCE_NAME),
    ("CommonName", NameOID.COMMON_NAME),
)


def _subject(subject: Mapping[str, str] | None) -> x509.Name | None:
    if not subject:
        return None
    return x509.Name([x509.NameAttribute(oid, subject[key]) for key, oid in _SUBJECT_FIELDS if key in subject])


def _general_names(names: list[Mapping[str, str]]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        if "UniformResourceIdentifier" in name:
            out.append(x509.UniformResourceIdentifier(name["UniformResourceIdentifier"]))
        elif "DnsName" in name:
            out.append(x509.DNSName(name["DnsName"]))
        else:
            raise AssertionError(f"general name {name} is not part of this test extension")
    return out


def _digital_signature() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
