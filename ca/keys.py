"""Key types the CA accepts, how to name a public key's type, and key generation.

A key type is one of the names in :data:`KEY_TYPES`; roles list them in their
``key_types`` allow-list and the audit trail records them.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, get_args

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ca.errors import CSRError

__all__ = [
    "DEFAULT_KEY_TYPES",
    "KEY_TYPES",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "generate_private_key",
    "key_type_of",
    "signature_hash_for",
]

KeyType: TypeAlias = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"]
KEY_TYPES: Final[tuple[KeyType, ...]] = get_args(KeyType)
# Ed25519 is off unless a role allows it: API Gateway's mutual TLS does not accept it.
DEFAULT_KEY_TYPES: Final[tuple[KeyType, ...]] = tuple(k for k in KEY_TYPES if k != "ed25519")

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_CURVES: Final[dict[str, KeyType]] = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}
_RSA_SIZES: Final[dict[int, KeyType]] = {2048: "rsa-2048", 3072: "rsa-3072", 4096: "rsa-4096"}


def key_type_of(public_key: CertificatePublicKeyTypes, *, holder: str | None = None) -> KeyType:
    """Name the type of ``public_key`` (one of :data:`KEY_TYPES`).

    ``holder`` names where the key came from in the error message ("this CSR").
    Raises :class:`CSRError` ``key_type_unsupported`` for every other key: RSA
    sizes other than 2048/3072/4096, curves other than P-256/P-384, DSA, Ed448, ...
    """
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve.name
        if curve in _CURVES:
            return _CURVES[curve]
        raise CSRError(
            f"ECDSA keys must use curve P-256 or P-384; {_has(holder)} a {curve} key",
            code="key_type_unsupported",
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        size = public_key.key_size
        if size in _RSA_SIZES:
            return _RSA_SIZES[size]
        raise CSRError(
            f"RSA keys must be 2048, 3072 or 4096 bits; {_has(holder)} a {size}-bit key",
            code="key_type_unsupported",
        )
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    raise CSRError(
        f"Keys must be ECDSA P-256 or P-384, RSA 2048, 3072 or 4096, or Ed25519; "
        f"{_has(holder)} a {_algorithm_name(public_key)} key",
        code="key_type_unsupported",
    )


def generate_private_key(key_type: str) -> PrivateKey:
    """A new private key of ``key_type`` (one of :data:`KEY_TYPES`).

    Raises ``ValueError`` for any other name.
    """
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-3072", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def signature_hash_for(private_key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The hash a CA key of this type signs with: SHA-384 for P-384, SHA-256 otherwise, none for Ed25519."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and private_key.curve.key_size >= 384:
        return hashes.SHA384()
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return None
    return hashes.SHA256()


def _has(holder: str | None) -> str:
    return f"{holder} has" if holder else "this is"


def _algorithm_name(public_key: CertificatePublicKeyTypes) -> str:
    # cryptography's class names ("DSAPublicKey", "Ed448PublicKey") are what a person recognises.
    name = type(public_key).__name__.removesuffix("PublicKey")
    return name or "unknown"
