"""EC2 instance identity documents: verify AWS's signature, then read the facts.

A machine sends the document exactly as IMDS served it and one of its three
signature forms (``rsa2048``, ``pkcs7``, ``signature``). The document is read only
far enough to learn its region, the proof is checked against the pinned AWS
certificates *of that region* (:mod:`issuer.attest.ec2_certs`), and only then are
the fields parsed into an :class:`InstanceIdentityDocument`. Pure: bytes in, values
out; the optional liveness check lives in :mod:`issuer.attest.ec2_instance`.

Errors (all :class:`~issuer.errors.IssuerError`, each with a stable ``code``)::

    ClientError   400  ProofFormError        ec2_proof_form          none or several forms
                       DocumentMalformed     ec2_document_malformed  not a JSON object, bad field
                       BlobMalformed         ec2_blob_malformed      not base64, truncated, not CMS
    Unauthorized  401  RegionUnknown         ec2_region_unknown      no pinned cert for the region
                       SignatureInvalid      ec2_signature_invalid
                       ContentMismatch       ec2_cms_content_mismatch
                       SignerUntrusted       ec2_cms_signer_untrusted
                       SignerCount           ec2_cms_signer_count
                       DigestMismatch        ec2_cms_digest_mismatch
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from issuer.attest.cms import (
    BlobMalformed,
    ContentMismatch,
    DigestMismatch,
    SignatureInvalid,
    SignerCount,
    SignerUntrusted,
    verify_signed_data,
)
from issuer.attest.ec2_certs import AwsCertStore, SignatureForm
from issuer.attest.identity import VerifiedIdentity
from issuer.errors import ClientError, Unauthorized

__all__ = [
    "MAX_BLOB_CHARS",
    "MAX_DOCUMENT_BYTES",
    "BlobMalformed",
    "ContentMismatch",
    "DigestMismatch",
    "DocumentMalformed",
    "Ec2Proof",
    "InstanceIdentityDocument",
    "ProofFormError",
    "RegionUnknown",
    "SignatureInvalid",
    "SignerCount",
    "SignerUntrusted",
    "identity_from_document",
    "verify_instance_identity",
]

# AWS's documents are ~500 bytes and the blobs ~1.5 KiB; the caps only bound the work
# an unauthenticated request can cause.
MAX_DOCUMENT_BYTES = 16 * 1024
MAX_BLOB_CHARS = 16 * 1024


class ProofFormError(ClientError):
    default_code = "ec2_proof_form"


class DocumentMalformed(ClientError):
    default_code = "ec2_document_malformed"


class RegionUnknown(Unauthorized):
    default_code = "ec2_region_unknown"


_FORM_FIELDS: tuple[SignatureForm, ...] = ("rsa2048", "pkcs7", "signature")
_PEM = re.compile(r"-----BEGIN (PKCS7|CMS)-----(.*)-----END \1-----", re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

# Shapes of the fields that end up in URI SANs and audit rows; a signed document
# always matches them, so anything else is refused rather than escaped.
_ACCOUNT = re.compile(r"[0-9]{12}")
_INSTANCE = re.compile(r"i-[0-9a-f]{8,17}")
_IMAGE = re.compile(r"ami-[0-9a-f]{8,17}")
_REGION = re.compile(r"[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass(frozen=True, slots=True)
class Ec2Proof:
    """An identity document (the exact bytes) and one signature over it, as IMDS serves it."""

    document: bytes
    form: SignatureForm
    blob: str

    @classmethod
    def from_fields(cls, *, document: str, rsa2048: str | None, pkcs7: str | None, signature: str | None) -> Ec2Proof:
        """Build a proof from the request fields.

        ``document`` is UTF-8 encoded as given (never re-serialised). Exactly one of
        the forms must be given (not None), and it must not be blank: a second field,
        even an empty one, makes the proof ambiguous.
        Raises :class:`ProofFormError` (none, several, or a blank form) or
        :class:`DocumentMalformed` (not encodable, or too large).
        """
        given = {
            form: value
            for form, value in zip(_FORM_FIELDS, (rsa2048, pkcs7, signature), strict=True)
            if value is not None
        }
        if len(given) != 1:
            raise ProofFormError(
                "Send the identity document with exactly one of rsa2048, pkcs7 or signature.",
                reason=f"signature forms given: {sorted(given) or 'none'}",
            )
        ((form, blob),) = given.items()
        if not blob.strip():
            raise ProofFormError(f"The {form} signature is empty.", reason=f"signature form {form} given blank")
        try:
            raw = document.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DocumentMalformed("The identity document is not valid text.", reason=str(exc)) from exc
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise DocumentMalformed("The identity document is too large.", reason=f"document is {len(raw)} bytes")
        return cls(document=raw, form=form, blob=blob)


@dataclass(frozen=True, slots=True)
class InstanceIdentityDocument:
    """The verified facts of an identity document."""

    account_id: str
    instance_id: str
    region: str
    availability_zone: str | None
    image_id: str
    instance_type: str | None
    architecture: str | None
    private_ip: str | None
    pending_time: datetime  # aware, UTC


def verify_instance_identity(proof: Ec2Proof, *, certs: AwsCertStore) -> InstanceIdentityDocument:
    """Check ``proof`` with the pinned AWS certificates of the document's region.

    Returns the parsed document once the signature verified. Raises the errors in
    the module docstring. The AWS certificate's validity period is not consulted:
    documents are signed once at launch and stay valid after a certificate expires.
    """
    fields = _load_json(proof.document)
    region = _required(fields, "region", _REGION)
    trusted = certs.for_region(region, proof.form)
    if not trusted:
        raise RegionUnknown(
            "The identity document's region is not supported.",
            reason=f"no pinned AWS certificate for region {region!r}, form {proof.form}",
        )
    raw = _decode_blob(proof.blob, armour_ok=proof.form != "signature")
    if proof.form == "signature":
        _verify_raw_signature(raw, document=proof.document, trusted=trusted)
    else:
        verify_signed_data(raw, content=proof.document, trusted=trusted)
    return _parse_document(fields)


def identity_from_document(doc: InstanceIdentityDocument) -> VerifiedIdentity:
    """The :class:`VerifiedIdentity` of an instance (method ``aws-ec2``, principal its ID)."""
    attributes = {
        "instance_id": doc.instance_id,
        "image_id": doc.image_id,
        "pending_time": doc.pending_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    optional = {
        "instance_type": doc.instance_type,
        "availability_zone": doc.availability_zone,
        "architecture": doc.architecture,
        "private_ip": doc.private_ip,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    return VerifiedIdentity(
        method="aws-ec2",
        principal=doc.instance_id,
        account_id=doc.account_id,
        region=doc.region,
        attributes=MappingProxyType(attributes),
    )


def _decode_blob(blob: str, *, armour_ok: bool) -> bytes:
    if len(blob) > MAX_BLOB_CHARS:
        raise BlobMalformed("The signature is too large.", reason=f"blob is {len(blob)} characters")
    text = blob.strip()
    if armour_ok and (match := _PEM.fullmatch(text)):
        text = match.group(2)
    # IMDS wraps at 76 columns; clients may add CRLF or drop the wrapping.
    compact = "".join(text.split())
    if not compact or not _BASE64.fullmatch(compact):
        raise BlobMalformed("The signature is not base64.", reason="blob has non-base64 characters")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BlobMalformed("The signature is not valid base64.", reason=f"base64: {exc}") from exc


def _verify_raw_signature(signature: bytes, *, document: bytes, trusted: tuple[x509.Certificate, ...]) -> None:
    keys = [c.public_key() for c in trusted]
    rsa_keys = [k for k in keys if isinstance(k, rsa.RSAPublicKey)]
    if not any(len(signature) == (k.key_size + 7) // 8 for k in rsa_keys):
        raise BlobMalformed(
            "The signature has the wrong length.",
            reason=f"{len(signature)}-byte signature; pinned RSA keys are "
            f"{sorted({k.key_size for k in rsa_keys})} bits",
        )
    for key in rsa_keys:
        try:
            key.verify(signature, document, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return
    raise SignatureInvalid(
        "The identity document signature did not verify.",
        reason=f"RSA PKCS#1 v1.5 SHA-256 signature verified with none of {len(rsa_keys)} pinned keys",
    )


def _load_json(document: bytes) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise ValueError("duplicate key")
        return out

    try:
        value = json.loads(document.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DocumentMalformed("The identity document is not JSON.", reason=f"JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DocumentMalformed("The identity document is not a JSON object.", reason=type(value).__name__)
    return value


def _required(fields: dict[str, Any], name: str, shape: re.Pattern[str]) -> str:
    value = fields.get(name)
    if value is None:
        raise DocumentMalformed(
            f"The identity document has no {name}.", reason=f"required field {name} missing or null"
        )
    if not isinstance(value, str) or not shape.fullmatch(value):
        raise DocumentMalformed(f"The identity document's {name} is invalid.", reason=f"{name}={value!r}")
    return value


def _optional(fields: dict[str, Any], name: str, shape: re.Pattern[str]) -> str | None:
    return None if fields.get(name) is None else _required(fields, name, shape)


def _parse_document(fields: dict[str, Any]) -> InstanceIdentityDocument:
    pending_raw = fields.get("pendingTime")
    if not isinstance(pending_raw, str):
        raise DocumentMalformed(
            "The identity document has no valid pendingTime.", reason=f"pendingTime={pending_raw!r}"
        )
    try:
        pending = datetime.fromisoformat(pending_raw)
    except ValueError as exc:
        raise DocumentMalformed(
            "The identity document's pendingTime is invalid.", reason=f"pendingTime={pending_raw!r}"
        ) from exc
    if pending.tzinfo is None:
        raise DocumentMalformed(
            "The identity document's pendingTime is invalid.", reason=f"pendingTime={pending_raw!r} is naive"
        )
    private_ip = fields.get("privateIp")
    if private_ip is not None:
        try:
            if not isinstance(private_ip, str):
                raise ValueError("not a string")
            private_ip = str(ipaddress.ip_address(private_ip))
        except ValueError as exc:
            raise DocumentMalformed(
                "The identity document's privateIp is invalid.", reason=f"privateIp={private_ip!r}"
            ) from exc
    return InstanceIdentityDocument(
        account_id=_required(fields, "accountId", _ACCOUNT),
        instance_id=_required(fields, "instanceId", _INSTANCE),
        region=_required(fields, "region", _REGION),
        availability_zone=_optional(fields, "availabilityZone", _TOKEN),
        image_id=_required(fields, "imageId", _IMAGE),
        instance_type=_optional(fields, "instanceType", _TOKEN),
        architecture=_optional(fields, "architecture", _TOKEN),
        private_ip=private_ip,
        pending_time=pending.astimezone(UTC),
    )
