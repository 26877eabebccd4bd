"""The AWS certificates that verify EC2 instance identity documents.

AWS publishes one certificate per region and per signature form (EC2 user guide,
"Verify the instance identity document"). They ship with this package under
``issuer/attest/aws_certs/<folder>/<region>.pem``:

=============  ===========  ==============================================================
form           folder       what IMDS serves
=============  ===========  ==============================================================
``rsa2048``    rsa2048/     ``/latest/dynamic/instance-identity/rsa2048`` (CMS, RSA-2048)
``pkcs7``      dsa/         ``/latest/dynamic/instance-identity/pkcs7`` (CMS, DSA; RSA in China)
``signature``  rsa/         ``/latest/dynamic/instance-identity/signature`` (raw RSA-1024)
=============  ===========  ==============================================================

Operators add certificates per region in configuration (``[aws.ec2] extra_certs``),
for new regions or re-issued certificates; an extra certificate applies to every form
of its region, because the CMS checks pick the signer by issuer and serial anyway and
the raw signature check only accepts a key that verifies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from cryptography import x509

from issuer.errors import ConfigError

__all__ = ["FORMS", "AwsCertStore", "SignatureForm", "load_extra_certs"]

SignatureForm = Literal["rsa2048", "pkcs7", "signature"]
FORMS: tuple[SignatureForm, ...] = ("rsa2048", "pkcs7", "signature")

# Form -> package data folder; AWS names the pkcs7 certificates "DSA" and the
# signature certificates "RSA" in its documentation.
_FOLDERS: Mapping[SignatureForm, str] = MappingProxyType({"rsa2048": "rsa2048", "pkcs7": "dsa", "signature": "rsa"})

# af-south-1, us-gov-west-1, cn-north-1, eusc-de-east-1, ...: a typo in the
# configuration would otherwise add a certificate that is never consulted.
_REGION = re.compile(r"[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}")

_Certs = tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class AwsCertStore:
    """Pinned AWS certificates by form and region, plus the operator's extras by region.

    Build it with :meth:`builtin`; the mappings are read-only.
    """

    pinned: Mapping[SignatureForm, Mapping[str, _Certs]]
    extra: Mapping[str, _Certs] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def builtin(cls, extra: Mapping[str, Sequence[x509.Certificate]] | None = None) -> AwsCertStore:
        """Load the certificates shipped with the package (now, not at import time).

        ``extra`` maps a region to additional certificates (see :func:`load_extra_certs`).
        Raises :class:`~issuer.errors.ConfigError` if an extra region name is not a
        region name, or if the package data is missing (a broken installation).
        """
        root = resources.files("issuer.attest").joinpath("aws_certs")
        pinned: dict[SignatureForm, Mapping[str, _Certs]] = {}
        for form, folder in _FOLDERS.items():
            by_region: dict[str, _Certs] = {}
            directory = root.joinpath(folder)
            if not directory.is_dir():
                raise ConfigError(f"package data missing: issuer/attest/aws_certs/{folder}/")
            for entry in directory.iterdir():
                if entry.name.endswith(".pem"):
                    region = entry.name.removesuffix(".pem")
                    by_region[region] = tuple(x509.load_pem_x509_certificates(entry.read_bytes()))
            if not by_region:
                raise ConfigError(f"package data missing: no certificates in aws_certs/{folder}/")
            pinned[form] = MappingProxyType(by_region)
        extras: dict[str, _Certs] = {}
        for region, certs in (extra or {}).items():
            _check_region(region)
            extras[region] = tuple(certs)
        return cls(pinned=MappingProxyType(pinned), extra=MappingProxyType(extras))

    def for_region(self, region: str, form: SignatureForm) -> _Certs:
        """The certificates that may have signed a ``form`` proof of a document from ``region``.

        The shipped certificate(s) first, then the operator's extras for the region.
        An empty tuple means the region is unknown for that form.
        """
        try:
            shipped = self.pinned[form].get(region, ())
        except KeyError:
            raise ValueError(f"unknown signature form {form!r}") from None
        return shipped + self.extra.get(region, ())

    def regions(self, form: SignatureForm) -> frozenset[str]:
        """Every region with at least one certificate for ``form`` (shipped or extra)."""
        return frozenset(self.pinned[form]) | frozenset(r for r, certs in self.extra.items() if certs)


def load_extra_certs(mapping: Mapping[str, Sequence[Path]]) -> dict[str, list[x509.Certificate]]:
    """Read the operator's extra certificates: region -> PEM files (one or more certificates each).

    Returns region -> certificates, in the order given. Raises
    :class:`~issuer.errors.ConfigError` naming the region and the file when a region
    name is malformed, a file cannot be read, or it holds no PEM certificate.
    """
    out: dict[str, list[x509.Certificate]] = {}
    for region, paths in mapping.items():
        _check_region(region)
        certs: list[x509.Certificate] = []
        for path in paths:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"aws.ec2.extra_certs[{region!r}]: cannot read {path}: {exc.strerror or exc}"
                ) from exc
            try:
                certs.extend(x509.load_pem_x509_certificates(data))
            except ValueError as exc:
                raise ConfigError(
                    f"aws.ec2.extra_certs[{region!r}]: {path} is not a PEM certificate file ({exc})"
                ) from exc
        out[region] = certs
    return out


def _check_region(region: str) -> None:
    if not _REGION.fullmatch(region):
        raise ConfigError(f"aws.ec2.extra_certs: {region!r} is not an AWS region name (like 'us-east-1')")
