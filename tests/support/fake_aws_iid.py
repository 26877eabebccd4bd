"""A stand-in for AWS's identity-document signer, for tests and the demo.

Makes a self-signed "AWS" certificate and key like the ones AWS publishes, builds
identity documents formatted like AWS's, and signs them in the three forms IMDS
serves (``rsa2048`` and ``pkcs7`` CMS SignedData with signed attributes, raw
``signature``), base64 wrapped at 76 columns. Knobs produce the forgeries a
verifier must refuse: embedded certificates, extra signers, other content, a
wrong messageDigest, missing signed attributes, lying algorithm protection.

Register the fake certificate as an operator extra for a region::

    signer = FakeAwsSigner.create(kind="rsa2048")
    certs = AwsCertStore.builtin(extra={"eu-west-1": [signer.cert]})
    doc = build_document(region="eu-west-1")
    proof = Ec2Proof.from_fields(document=doc.decode(), rsa2048=sign(doc, signer, "rsa2048"), ...)
"""

from __future__ import annotations

import base64
import json
import textwrap
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

KeyKind = Literal["rsa2048", "rsa1024", "dsa"]
Form = Literal["rsa2048", "pkcs7", "signature"]
# AWS still signs identity documents with DSA (the PKCS7 form), so the fakes must too; cryptography
# 51 warns on every use of DSA. Quiet for the benchmark's document making (pytest applies its own
# filters in tests, where the product's DSA verification shows the warning as it should).
warnings.filterwarnings("ignore", message="DSA is deprecated", category=CryptographyDeprecationWarning)
PrivateKey = rsa.RSAPrivateKey | dsa.DSAPrivateKey

# The subject AWS's certificates carry; a fake by default says it is a fake.
AWS_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington State"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon Web Services LLC"),
    ]
)
FAKE_AWS_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fake Amazon Web Services (tests)"),
    ]
)
SIGNING_TIME = datetime(2026, 2, 16, 0, 38, 28, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FakeAwsSigner:
    key: PrivateKey
    cert: x509.Certificate

    @classmethod
    def create(
        cls,
        *,
        kind: KeyKind = "rsa2048",
        name: x509.Name = FAKE_AWS_NAME,
        serial: int | None = None,
        not_before: datetime = datetime(2020, 1, 1, tzinfo=UTC),
        lifetime: timedelta = timedelta(days=365 * 100),
        key: PrivateKey | None = None,
    ) -> FakeAwsSigner:
        """A key of ``kind`` and a self-signed certificate ``name``/``serial`` (random serial if None)."""
        if key is None:
            key = (
                dsa.generate_private_key(key_size=1024)
                if kind == "dsa"
                else rsa.generate_private_key(public_exponent=65537, key_size=1024 if kind == "rsa1024" else 2048)
            )
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + lifetime)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, cert=cert)

    @classmethod
    def impersonating(cls, real: x509.Certificate, *, kind: KeyKind = "rsa2048") -> FakeAwsSigner:
        """Our own key in a certificate that claims ``real``'s issuer and serial (a forgery)."""
        return cls.create(kind=kind, name=real.issuer, serial=real.serial_number)


def build_document(
    *,
    account_id: str = "123456789012",
    instance_id: str = "i-0123456789abcdef0",
    region: str = "eu-west-1",
    image_id: str = "ami-0abcdef1234567890",
    pending_time: str = "2026-02-16T00:38:27Z",
    instance_type: str = "t3.micro",
    architecture: str = "x86_64",
    private_ip: str | None = "10.0.1.5",
    availability_zone: str | None = None,
    extra: Mapping[str, Any] | None = None,
    omit: Collection[str] = (),
) -> bytes:
    """A document laid out like AWS's (``"key" : value``, two-space indent, no final newline).

    ``extra`` adds or replaces fields (by AWS's camelCase name); ``omit`` drops them.
    """
    fields: dict[str, Any] = {
        "accountId": account_id,
        "architecture": architecture,
        "availabilityZone": availability_zone or f"{region}a",
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": image_id,
        "instanceId": instance_id,
        "instanceType": instance_type,
        "kernelId": None,
        "pendingTime": pending_time,
        "privateIp": private_ip,
        "ramdiskId": None,
        "region": region,
        "version": "2017-09-30",
    }
    fields.update(extra or {})
    lines = [f"  {json.dumps(k)} : {json.dumps(v)}" for k, v in fields.items() if k not in omit]
    return ("{\n" + ",\n".join(lines) + "\n}").encode()


def imds_base64(raw: bytes) -> str:
    """Base64 wrapped at 76 columns without a final newline, as IMDS serves it."""
    return "\n".join(textwrap.wrap(base64.b64encode(raw).decode(), 76))


def sign(document: bytes, signer: FakeAwsSigner, form: Form) -> str:
    """The IMDS base64 of ``form`` over ``document``, made the way AWS makes it."""
    if form == "signature":
        return imds_base64(sign_raw(document, signer))
    if isinstance(signer.key, dsa.DSAPrivateKey):
        return imds_base64(sign_cms(document, signer, digest="sha1", signature_algorithm="sha1_dsa"))
    return imds_base64(sign_cms(document, signer))


def sign_raw(document: bytes, signer: FakeAwsSigner) -> bytes:
    """RSA PKCS#1 v1.5 SHA-256 over the document bytes (the ``signature`` form)."""
    if not isinstance(signer.key, rsa.RSAPrivateKey):
        raise TypeError("the signature form is RSA")
    return signer.key.sign(document, padding.PKCS1v15(), hashes.SHA256())


def sign_cms(
    document: bytes,
    signer: FakeAwsSigner,
    *,
    digest: str = "sha256",
    signature_algorithm: str = "sha256_rsa",
    content: bytes | None = None,
    embed: Sequence[x509.Certificate] = (),
    extra_signers: Sequence[FakeAwsSigner] = (),
    algorithm_protection: bool = True,
    protected_signature_algorithm: str | None = None,
    signed_attrs: bool = True,
    message_digest: bytes | None = None,
    content_type: str = "data",
    by_key_id: bool = False,
    signing_time: datetime = SIGNING_TIME,
    repeat_attribute: str | None = None,
    extra_attribute: str | None = None,
) -> bytes:
    """DER ContentInfo(SignedData) over ``document`` by ``signer`` (and ``extra_signers``).

    ``content`` replaces the encapsulated bytes after signing ``document``;
    ``message_digest``, ``content_type`` and ``protected_signature_algorithm`` put
    other values into the signed attributes; ``signed_attrs=False`` signs the content
    directly; ``embed`` adds certificates; ``by_key_id`` names the signer by SKI;
    ``repeat_attribute`` (``signing_time``, …) signs that attribute twice; ``extra_attribute`` (a
    dotted OID) signs one more attribute of that type, with a NULL value.
    """
    infos = [
        _signer_info(
            document,
            s,
            digest=digest,
            signature_algorithm=signature_algorithm,
            algorithm_protection=algorithm_protection,
            protected_signature_algorithm=protected_signature_algorithm or signature_algorithm,
            with_attrs=signed_attrs,
            message_digest=message_digest,
            content_type=content_type,
            by_key_id=by_key_id,
            signing_time=signing_time,
            repeat_attribute=repeat_attribute,
            extra_attribute=extra_attribute,
        )
        for s in (signer, *extra_signers)
    ]
    signed_data: dict[str, Any] = {
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})],
        "encap_content_info": {"content_type": "data", "content": document if content is None else content},
        "signer_infos": infos,
    }
    if embed:
        signed_data["certificates"] = [_asn1_cert(c) for c in embed]
    info = cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed_data)})
    return bytes(info.dump())


def _signer_info(
    document: bytes,
    signer: FakeAwsSigner,
    *,
    digest: str,
    signature_algorithm: str,
    algorithm_protection: bool,
    protected_signature_algorithm: str,
    with_attrs: bool,
    message_digest: bytes | None,
    content_type: str,
    by_key_id: bool,
    signing_time: datetime,
    repeat_attribute: str | None,
    extra_attribute: str | None,
) -> cms.SignerInfo:
    hash_alg = _HASHES[digest]()
    h = hashes.Hash(hash_alg)
    h.update(document)
    attrs = [
        cms.CMSAttribute({"type": "content_type", "values": [content_type]}),
        cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": signing_time})]}),
        cms.CMSAttribute({"type": "message_digest", "values": [message_digest or h.finalize()]}),
    ]
    if algorithm_protection:
        protection = cms.CMSAlgorithmProtection(
            {
                "digest_algorithm": {"algorithm": digest},
                "signature_algorithm": {"algorithm": protected_signature_algorithm, "parameters": core.Null()},
            }
        )
        attrs.append(cms.CMSAttribute({"type": "cms_algorithm_protection", "values": [protection]}))
    attrs += [cms.CMSAttribute.load(a.dump()) for a in attrs if a["type"].native == repeat_attribute]
    if extra_attribute is not None:
        attrs.append(cms.CMSAttribute({"type": extra_attribute, "values": [core.Null()]}))
    # DER sorts a SET OF by encoding; OpenSSL re-encodes before verifying, so must we.
    attrs.sort(key=lambda a: a.dump())
    signed = cms.CMSAttributes(attrs)
    to_sign = signed.dump() if with_attrs else document
    if isinstance(signer.key, dsa.DSAPrivateKey):
        signature = signer.key.sign(to_sign, hash_alg)
    else:
        signature = signer.key.sign(to_sign, padding.PKCS1v15(), hash_alg)
    cert = _asn1_cert(signer.cert)
    sid = (
        cms.SignerIdentifier({"subject_key_identifier": cert.key_identifier})
        if by_key_id
        else cms.SignerIdentifier(
            {"issuer_and_serial_number": {"issuer": cert.issuer, "serial_number": cert.serial_number}}
        )
    )
    info: dict[str, Any] = {
        "version": "v3" if by_key_id else "v1",
        "sid": sid,
        "digest_algorithm": {"algorithm": digest},
        "signature_algorithm": {"algorithm": signature_algorithm},
        "signature": signature,
    }
    if with_attrs:
        info["signed_attrs"] = signed
    return cms.SignerInfo(info)


def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
