"""Verify a CMS (PKCS#7) SignedData against pinned certificates, and nothing else.

``cryptography`` has no public CMS verify API, so ``asn1crypto`` parses the
structure (it reads the BER with indefinite lengths that AWS emits) and
``cryptography`` checks the signature. The rules, strictest first:

* the ContentInfo is ``signedData`` with exactly one SignerInfo;
* the encapsulated content equals the expected bytes exactly (never re-serialised);
* the signer, named by issuer+serial (or subject key identifier), is one of the
  *trusted* certificates. Certificates embedded in the CMS are never used to verify;
  one that claims to be the signer but differs from the pinned certificate is a
  forgery and is refused as such;
* signed attributes are present: ``contentType`` = data, ``messageDigest`` = the
  digest of the content, and ``CMSAlgorithmProtection`` (RFC 6211), when present,
  names the same algorithms as the SignerInfo;
* the signature over the DER of the signed attributes (re-tagged as SET) verifies
  with the pinned key: RSA PKCS#1 v1.5 (``rsaEncryption`` or ``sha*WithRSAEncryption``)
  or DSA. Certificate validity periods are not checked: what matters is the key.

The signed attributes are first compared as bytes (:mod:`issuer.attest.der`) with what AWS signs
(:func:`_attrs_as_expected`, two fifths of the time asn1crypto takes to read them); whatever differs
is read in full by asn1crypto, whose verdict stands, so the comparison can only ever accept what the
full reading accepts.

The error codes are those of the EC2 proof, the only caller::

    ClientError   400  BlobMalformed        ec2_blob_malformed
    Unauthorized  401  ContentMismatch      ec2_cms_content_mismatch
                       SignerCount          ec2_cms_signer_count
                       SignerUntrusted      ec2_cms_signer_untrusted
                       DigestMismatch       ec2_cms_digest_mismatch
                       SignatureInvalid     ec2_signature_invalid
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from issuer.attest import der
from issuer.errors import ClientError, IssuerError, Unauthorized

__all__ = [
    "BlobMalformed",
    "CmsError",
    "ContentMismatch",
    "DigestMismatch",
    "SignatureInvalid",
    "SignerCount",
    "SignerUntrusted",
    "verify_signed_data",
]


class CmsError(IssuerError):
    """Any refusal of :func:`verify_signed_data` (status hint from the concrete class)."""


class BlobMalformed(CmsError, ClientError):
    default_code = "ec2_blob_malformed"


class ContentMismatch(CmsError, Unauthorized):
    default_code = "ec2_cms_content_mismatch"


class SignerCount(CmsError, Unauthorized):
    default_code = "ec2_cms_signer_count"


class SignerUntrusted(CmsError, Unauthorized):
    default_code = "ec2_cms_signer_untrusted"


class DigestMismatch(CmsError, Unauthorized):
    default_code = "ec2_cms_digest_mismatch"


class SignatureInvalid(CmsError, Unauthorized):
    default_code = "ec2_signature_invalid"


# SHA-1 stays because AWS's DSA (``pkcs7``) signatures use it; forging one would
# need a second preimage on a document AWS chose, not a collision.
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_NOT_VERIFIED = "The identity document signature did not verify."


def verify_signed_data(blob_der: bytes, *, content: bytes, trusted: Sequence[x509.Certificate]) -> x509.Certificate:
    """Verify ``blob_der`` (a DER/BER ContentInfo) signs ``content`` with one of ``trusted``.

    Returns the trusted certificate whose key verified the signature. Raises
    :class:`BlobMalformed` if the bytes are not a CMS SignedData, and the other
    :class:`CmsError` subclasses (all 401) when it does not prove ``content``.
    """
    try:
        info = cms.ContentInfo.load(blob_der, strict=True)
        # Object identifiers are compared by their encoded bytes: naming one (``.native``) decodes it
        # digit by digit, in Python, on every document.
        if info["content_type"].contents != _SIGNED_DATA:
            raise BlobMalformed(
                "The signature is not a CMS SignedData.",
                reason=f"ContentInfo type is {info['content_type'].native!r}",
            )
        signed = info["content"]
        signer_infos = list(signed["signer_infos"])
        encap = signed["encap_content_info"]
        encap_type = "data" if encap["content_type"].contents == _DATA else encap["content_type"].native
        encap_content = encap["content"].native
        embedded = [c.chosen for c in signed["certificates"] or () if c.name == "certificate"]
    except (ValueError, TypeError, KeyError) as exc:
        raise BlobMalformed("The signature is not a valid CMS SignedData.", reason=f"CMS parse error: {exc}") from exc
    # asn1crypto parses lazily: an inner structure that is truncated or garbled fails where it is
    # first read, so what follows runs under the same net ("malformed", never a 500). Converting
    # every part to Python values up front to find out early cost half of the verification.
    try:
        return _verify_parsed(signer_infos, encap_type, encap_content, embedded, content=content, trusted=trusted)
    except (ValueError, TypeError, KeyError) as exc:
        raise BlobMalformed("The signature is not a valid CMS SignedData.", reason=f"CMS parse error: {exc}") from exc


def _verify_parsed(
    signer_infos: list[cms.SignerInfo],
    encap_type: object,
    encap_content: object,
    embedded: list[cms.Certificate],
    *,
    content: bytes,
    trusted: Sequence[x509.Certificate],
) -> x509.Certificate:
    if encap_type != "data" or encap_content != content:
        raise ContentMismatch(
            "The signed content is not the identity document.",
            reason=f"encapsulated {encap_type} content ({_size(encap_content)}) differs from the document",
        )
    if len(signer_infos) != 1:
        raise SignerCount("The signature must have exactly one signer.", reason=f"{len(signer_infos)} SignerInfos")
    signer = signer_infos[0]

    sid = signer["sid"]
    sid_der = sid.dump()
    candidates = [c for c in trusted if _pinned_names_signer(sid_der, c)]
    if not candidates:
        raise SignerUntrusted(
            "The signature is not by a pinned AWS certificate.",
            reason=f"signer {_describe_sid(sid)} is none of {len(trusted)} pinned certificates",
        )
    pinned_der = {_der_of(c) for c in candidates}
    for cert in embedded:
        if cert.dump() not in pinned_der and _names_signer(sid, cert):
            raise SignerUntrusted(
                "The signature is not by a pinned AWS certificate.",
                reason="CMS embeds a certificate that names the signer but is not the pinned AWS certificate",
            )

    digest_name = _digest_name(signer["digest_algorithm"].dump())
    hash_cls = _HASHES.get(digest_name)
    if hash_cls is None:
        raise SignatureInvalid(_NOT_VERIFIED, reason=f"unsupported digest algorithm {digest_name!r}")
    signed_attrs = _check_signed_attrs(signer, content=content, hash_cls=hash_cls)

    # RFC 5652 §5.4: the signature covers the DER of the attributes as an explicit SET OF: the
    # attributes' own bytes under a SET header (what ``untag().dump()`` makes, without copying the tree).
    attrs_der = der.element(der.SET, signed_attrs.contents)
    signature = signer["signature"].native
    failures: list[str] = []
    for cert in candidates:
        problem = _verify_one(cert, signer["signature_algorithm"], hash_cls, signature, attrs_der)
        if problem is None:
            return cert
        failures.append(problem)
    raise SignatureInvalid(_NOT_VERIFIED, reason="; ".join(failures))


def _check_signed_attrs(
    signer: cms.SignerInfo, *, content: bytes, hash_cls: type[hashes.HashAlgorithm]
) -> cms.CMSAttributes:
    attrs = signer["signed_attrs"]
    if not attrs:
        raise SignatureInvalid(_NOT_VERIFIED, reason="no signed attributes (AWS always signs them)")
    digest = hashes.Hash(hash_cls())
    digest.update(content)
    expected = digest.finalize()
    if _attrs_as_expected(attrs, expected, signer):
        return attrs
    # Something differs from what AWS signs: the full reading below says what (or accepts an encoding
    # the byte comparison does not know; it is the rule, the comparison only its fast way).
    values: dict[str, list[object]] = {}
    for attr in attrs:
        values.setdefault(attr["type"].native, []).extend(attr["values"])
    for name in ("content_type", "message_digest", "cms_algorithm_protection"):
        if len(values.get(name, [None])) != 1:
            raise SignatureInvalid(_NOT_VERIFIED, reason=f"signed attribute {name} is missing or repeated")
    (content_type,) = values["content_type"]
    if not isinstance(content_type, cms.ContentType) or content_type.native != "data":
        raise ContentMismatch(
            "The signed content is not the identity document.",
            reason="signed contentType attribute is not id-data",
        )
    (message_digest,) = values["message_digest"]
    if not isinstance(message_digest, core.OctetString) or message_digest.native != expected:
        raise DigestMismatch(
            "The signed digest does not match the identity document.",
            reason=f"messageDigest attribute is not the {hash_cls.name} of the document",
        )
    protection = values.get("cms_algorithm_protection")
    if protection is not None:
        (prot,) = protection
        if not isinstance(prot, cms.CMSAlgorithmProtection):
            raise SignatureInvalid(_NOT_VERIFIED, reason="malformed CMSAlgorithmProtection")
        # Parameters are NULL in one place and absent in another in AWS's own blobs;
        # the OIDs are what an algorithm-substitution attack would change.
        if not _protection_agrees(prot.dump(), signer["digest_algorithm"].dump(), signer["signature_algorithm"].dump()):
            raise SignatureInvalid(
                _NOT_VERIFIED, reason="CMSAlgorithmProtection disagrees with the SignerInfo algorithms"
            )
    return attrs


_SIGNED_DATA = der.oid("1.2.840.113549.1.7.2")
_DATA = der.oid("1.2.840.113549.1.7.1")
_CONTENT_TYPE = der.oid("1.2.840.113549.1.9.3")
_MESSAGE_DIGEST = der.oid("1.2.840.113549.1.9.4")
_ALGORITHM_PROTECTION = der.oid("1.2.840.113549.1.9.52")
_SIGNING_TIME = der.oid("1.2.840.113549.1.9.5")
_AWS_ATTRIBUTES = frozenset({_CONTENT_TYPE, _MESSAGE_DIGEST, _ALGORITHM_PROTECTION, _SIGNING_TIME})
# A contentType attribute's values, exactly one: id-data.
_ONLY_DATA = der.element(der.OID, _DATA)


def _attrs_as_expected(attrs: cms.CMSAttributes, expected: bytes, signer: cms.SignerInfo) -> bool:
    """Whether the signed attributes are exactly what :func:`_check_signed_attrs` accepts, told from their
    encoded bytes: one contentType whose one value is id-data, one messageDigest whose one value is
    ``expected``, at most one CMSAlgorithmProtection agreeing with the SignerInfo, at most one signingTime,
    nothing else. False means "read them in full", never "refuse": any encoding this does not expect is
    left to asn1crypto."""
    seen: dict[bytes, bytes] = {}
    for tag, attribute in der.elements(attrs.contents) or ((0, b""),):
        parts = der.elements(attribute) if tag == der.SEQUENCE else None
        if parts is None or len(parts) != 2 or parts[0][0] != der.OID or parts[1][0] != der.SET:
            return False
        kind, values = parts[0][1], parts[1][1]
        # Only the attributes AWS signs, each once, each a well-formed run of values: what asn1crypto would
        # read as another attribute (an unusual encoding of a known type, a broken value) it reads itself.
        if kind not in _AWS_ATTRIBUTES or kind in seen or der.elements(values) is None:
            return False
        seen[kind] = values
    if seen.get(_CONTENT_TYPE) != _ONLY_DATA:
        return False
    if seen.get(_MESSAGE_DIGEST) != der.element(der.OCTET_STRING, expected):
        return False
    protection = seen.get(_ALGORITHM_PROTECTION)
    return protection is None or _protection_values_agree(
        protection, signer["digest_algorithm"].dump(), signer["signature_algorithm"].dump()
    )


# The parts of a document's CMS that are the same in every document a region signs — the signer's
# identifier, the algorithm identifiers, the algorithm-protection attribute — are checked once per
# distinct DER encoding: each check below is a pure function of those bytes.


@functools.lru_cache(maxsize=512)
def _pinned_names_signer(sid_der: bytes, cert: x509.Certificate) -> bool:
    return _names_signer(cms.SignerIdentifier.load(sid_der), cert)


@functools.lru_cache(maxsize=512)
def _protection_agrees(protection_der: bytes, digest_der: bytes, signature_der: bytes) -> bool:
    """Whether a CMSAlgorithmProtection names the SignerInfo's digest and signature algorithms."""
    protection = cms.CMSAlgorithmProtection.load(protection_der)
    digest, signature = algos.DigestAlgorithm.load(digest_der), algos.SignedDigestAlgorithm.load(signature_der)
    # Parameters are NULL in one place and absent in another in AWS's own blobs;
    # the OIDs are what an algorithm-substitution attack would change.
    sig_alg = protection["signature_algorithm"]
    return bool(
        protection["digest_algorithm"]["algorithm"].dotted == digest["algorithm"].dotted
        and sig_alg.native is not None
        and sig_alg["algorithm"].dotted == signature["algorithm"].dotted
    )


@functools.lru_cache(maxsize=512)
def _protection_values_agree(values_contents: bytes, digest_der: bytes, signature_der: bytes) -> bool:
    """Whether an algorithm-protection attribute's values (their bytes) are one CMSAlgorithmProtection that
    agrees with the SignerInfo's algorithms (:func:`_protection_agrees`)."""
    try:
        values = cms.SetOfCMSAlgorithmProtection.load(der.element(der.SET, values_contents))
        return len(values) == 1 and _protection_agrees(values[0].dump(), digest_der, signature_der)
    except (ValueError, TypeError, KeyError):
        return False  # malformed: the full reading says so


@functools.lru_cache(maxsize=512)
def _digest_name(algorithm_der: bytes) -> str:
    """A DigestAlgorithm's name (``sha256``, …), or its dotted OID when asn1crypto has no name for it."""
    return str(algos.DigestAlgorithm.load(algorithm_der)["algorithm"].native)


@functools.lru_cache(maxsize=512)
def _signature_kind(algorithm_der: bytes, hash_name: str) -> tuple[str, str | None]:
    """The signature algorithm's kind (``rsassa_pkcs1v15``, ``dsa``, …), or why it cannot be used with
    the digest ``hash_name``."""
    algorithm = algos.SignedDigestAlgorithm.load(algorithm_der)
    try:
        kind = algorithm.signature_algo
    except ValueError:
        return "", f"unsupported signature algorithm {algorithm['algorithm'].dotted}"
    # sha256WithRSAEncryption and friends name the hash again; it must agree.
    if algorithm["algorithm"].native not in ("rsassa_pkcs1v15", "dsa"):
        try:
            implied = algorithm.hash_algo
        except ValueError:
            return "", f"unsupported signature algorithm {algorithm['algorithm'].dotted}"
        if implied != hash_name:
            return "", f"signature algorithm hash {implied} differs from digest algorithm {hash_name}"
    return kind, None


def _verify_one(
    cert: x509.Certificate,
    algorithm: algos.SignedDigestAlgorithm,
    hash_cls: type[hashes.HashAlgorithm],
    signature: bytes,
    data: bytes,
) -> str | None:
    """None if ``cert``'s key verifies; otherwise why not (for the audit reason)."""
    kind, problem = _signature_kind(algorithm.dump(), hash_cls.name)
    if problem is not None:
        return problem
    key = cert.public_key()
    try:
        if kind == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hash_cls())
        elif kind == "dsa" and isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, data, hash_cls())
        else:
            return f"{kind} signature cannot be checked with a {type(key).__name__} key"
    except InvalidSignature:
        return f"signature does not verify with the key of serial {cert.serial_number:X}"
    return None


@functools.lru_cache(maxsize=512)
def _der_of(cert: x509.Certificate) -> bytes:
    """A pinned certificate's DER (cryptography re-encodes it on every call: ~18 µs)."""
    return cert.public_bytes(Encoding.DER)


@functools.lru_cache(maxsize=512)
def _pinned(cert: x509.Certificate) -> tuple[asn1_x509.Certificate, bytes]:
    # The pinned certificates are the same on every request: parse each once, not per document.
    parsed = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))
    return parsed, parsed.issuer.dump()


def _names_signer(sid: cms.SignerIdentifier, cert: x509.Certificate | asn1_x509.Certificate) -> bool:
    if isinstance(cert, asn1_x509.Certificate):
        parsed, issuer_der = cert, None
    else:
        parsed, issuer_der = _pinned(cert)
    if sid.name == "issuer_and_serial_number":
        ias = sid.chosen
        if ias["serial_number"].native != parsed.serial_number:
            return False
        # The same DER is the same name; otherwise RFC 5280's name comparison decides.
        return bool(ias["issuer"].dump() == issuer_der or ias["issuer"] == parsed.issuer)
    if sid.name == "subject_key_identifier":
        return parsed.key_identifier is not None and parsed.key_identifier == sid.chosen.native
    return False


def _describe_sid(sid: cms.SignerIdentifier) -> str:
    if sid.name == "issuer_and_serial_number":
        ias = sid.chosen
        return f"issuer={ias['issuer'].human_friendly!r} serial={ias['serial_number'].native:X}"
    return f"ski={sid.chosen.native.hex()}"


def _size(value: object) -> str:
    return f"{len(value)} bytes" if isinstance(value, bytes) else "absent"
