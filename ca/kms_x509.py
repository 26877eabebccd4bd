"""Certificates and CRLs signed by a key that never leaves AWS KMS: the pure half.

cryptography cannot sign with an external key, so a certificate (or CRL) is made in
three steps, each here except the KMS call itself (``ca.kms``):

1. the builder is signed once with a *throwaway* local key of the same algorithm
   family and hash; the to-be-signed part (TBS) of that result carries everything
   the real certificate says, including the signatureAlgorithm OID (the throwaway key
   itself appears nowhere in a TBS);
2. KMS signs those TBS bytes (:func:`sign_request` says how);
3. ``SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }`` is assembled with
   asn1crypto (:func:`assemble`) and loaded back with cryptography.

Nothing here checks the signature: the caller verifies the result against the
issuing certificate before anyone sees it.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

from asn1crypto import algos, core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

__all__ = [
    "KMS_KEY_SPECS",
    "RAW_MESSAGE_LIMIT",
    "KmsAlgorithm",
    "KmsKeySpec",
    "KmsSignRequest",
    "ToBeSigned",
    "algorithm_for_key_spec",
    "algorithm_for_public_key",
    "assemble",
    "certificate_tbs",
    "crl_tbs",
    "sign_request",
]

KmsKeySpec: TypeAlias = Literal["ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048", "RSA_3072", "RSA_4096"]
KMS_KEY_SPECS: Final[tuple[KmsKeySpec, ...]] = get_args(KmsKeySpec)

# KMS Sign refuses a RAW message longer than this; larger TBS are sent as their digest.
RAW_MESSAGE_LIMIT: Final = 4096


@dataclass(frozen=True, slots=True)
class KmsAlgorithm:
    """How a key of ``key_spec`` signs: the KMS SigningAlgorithm and the hash inside it."""

    key_spec: KmsKeySpec
    signing_algorithm: Literal["ECDSA_SHA_256", "ECDSA_SHA_384", "RSASSA_PKCS1_V1_5_SHA_256"]
    hash: hashes.SHA256 | hashes.SHA384

    @property
    def is_rsa(self) -> bool:
        return self.key_spec.startswith("RSA_")


# The same choices as the local backend (ca.keys.signature_hash_for): SHA-384 for P-384,
# SHA-256 otherwise, RSA with PKCS#1 v1.5 (what cryptography's builders use for RSA keys).
_ALGORITHMS: Final[dict[str, KmsAlgorithm]] = {
    "ECC_NIST_P256": KmsAlgorithm("ECC_NIST_P256", "ECDSA_SHA_256", hashes.SHA256()),
    "ECC_NIST_P384": KmsAlgorithm("ECC_NIST_P384", "ECDSA_SHA_384", hashes.SHA384()),
    "RSA_2048": KmsAlgorithm("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256", hashes.SHA256()),
    "RSA_3072": KmsAlgorithm("RSA_3072", "RSASSA_PKCS1_V1_5_SHA_256", hashes.SHA256()),
    "RSA_4096": KmsAlgorithm("RSA_4096", "RSASSA_PKCS1_V1_5_SHA_256", hashes.SHA256()),
}
_CURVES: Final[dict[str, KmsKeySpec]] = {"secp256r1": "ECC_NIST_P256", "secp384r1": "ECC_NIST_P384"}
_RSA_SIZES: Final[dict[int, KmsKeySpec]] = {2048: "RSA_2048", 3072: "RSA_3072", 4096: "RSA_4096"}


def algorithm_for_key_spec(key_spec: str) -> KmsAlgorithm | None:
    """The algorithm for a KMS KeySpec, or None for a spec this CA does not sign with."""
    return _ALGORITHMS.get(key_spec)


def algorithm_for_public_key(public_key: CertificatePublicKeyTypes) -> KmsAlgorithm | None:
    """The algorithm a KMS key with this public key signs with, or None if KMS has no such key spec."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name in _CURVES:
        return _ALGORITHMS[_CURVES[public_key.curve.name]]
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size in _RSA_SIZES:
        return _ALGORITHMS[_RSA_SIZES[public_key.key_size]]
    return None


@dataclass(frozen=True, slots=True)
class KmsSignRequest:
    """The ``Message``, ``MessageType`` and ``SigningAlgorithm`` of one KMS ``Sign`` call."""

    message: bytes
    message_type: Literal["RAW", "DIGEST"]
    signing_algorithm: str


def sign_request(algorithm: KmsAlgorithm, tbs: bytes) -> KmsSignRequest:
    """How to ask KMS to sign ``tbs``: RAW up to :data:`RAW_MESSAGE_LIMIT` bytes, else DIGEST.

    RAW lets KMS hash (and is the only form some emulators get right); a DIGEST
    message is the SHA-256/384 of ``tbs`` as the algorithm says, which real KMS signs
    exactly as it would have signed the RAW bytes (for RSA it adds the DigestInfo).
    """
    if len(tbs) <= RAW_MESSAGE_LIMIT:
        return KmsSignRequest(tbs, "RAW", algorithm.signing_algorithm)
    digest = hashlib.new(algorithm.hash.name, tbs).digest()
    return KmsSignRequest(digest, "DIGEST", algorithm.signing_algorithm)


@dataclass(frozen=True, slots=True)
class ToBeSigned:
    """The TBS bytes of a certificate or CRL and the DER AlgorithmIdentifier it names."""

    kind: Literal["certificate", "crl"]
    tbs: bytes
    signature_algorithm: bytes

    def __repr__(self) -> str:
        return f"ToBeSigned({self.kind}, {len(self.tbs)} bytes)"


def certificate_tbs(builder: x509.CertificateBuilder, algorithm: KmsAlgorithm) -> ToBeSigned:
    """The TBSCertificate ``builder`` makes when signed with ``algorithm`` (and its AlgorithmIdentifier)."""
    signed = builder.sign(_throwaway_key(algorithm.is_rsa), algorithm.hash)
    parsed = asn1_x509.Certificate.load(signed.public_bytes(serialization.Encoding.DER))
    return ToBeSigned("certificate", signed.tbs_certificate_bytes, parsed["signature_algorithm"].dump())


def crl_tbs(builder: x509.CertificateRevocationListBuilder, algorithm: KmsAlgorithm) -> ToBeSigned:
    """The TBSCertList ``builder`` makes when signed with ``algorithm`` (and its AlgorithmIdentifier)."""
    signed = builder.sign(_throwaway_key(algorithm.is_rsa), algorithm.hash)
    parsed = asn1_crl.CertificateList.load(signed.public_bytes(serialization.Encoding.DER))
    return ToBeSigned("crl", signed.tbs_certlist_bytes, parsed["signature_algorithm"].dump())


def assemble(tbs: ToBeSigned, signature: bytes) -> bytes:
    """The DER certificate or CRL: ``tbs`` as it is, its AlgorithmIdentifier, and ``signature``.

    The TBS is embedded byte for byte (asn1crypto re-emits a loaded value's original
    encoding), so the signature KMS made over it stays valid.
    """
    algorithm = algos.SignedDigestAlgorithm.load(tbs.signature_algorithm)
    if tbs.kind == "certificate":
        return bytes(
            asn1_x509.Certificate(
                {
                    "tbs_certificate": asn1_x509.TbsCertificate.load(tbs.tbs),
                    "signature_algorithm": algorithm,
                    "signature_value": core.OctetBitString(signature),
                }
            ).dump()
        )
    return bytes(
        asn1_crl.CertificateList(
            {
                "tbs_cert_list": asn1_crl.TbsCertList.load(tbs.tbs),
                "signature_algorithm": algorithm,
                "signature": core.OctetBitString(signature),
            }
        ).dump()
    )


@functools.cache
def _throwaway_key(is_rsa: bool) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    # One per process: only the algorithm family and hash reach the TBS, never this key.
    # The curve does not matter either (ecdsa-with-SHA384 has no parameters), so P-256 serves P-384 too.
    if is_rsa:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())
