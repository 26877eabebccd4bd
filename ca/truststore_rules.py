"""API Gateway's rules for a mutual-TLS truststore, checked before the file is uploaded.

API Gateway reads the truststore only when a custom domain is created or updated, and
then merely *warns* about certificates it cannot use ("Mutual TLS is still enabled, but
some clients might not be able to access your API"); a client whose issuer is one of
them gets a 403 at the TLS handshake. So the publisher checks the same rules first and
refuses to upload a file that breaks them.

Sources (AWS, *Amazon API Gateway Developer Guide*):

- "Configuring mutual TLS authentication for a REST API" (``rest-api-mutual-tls``) and
  "... for an HTTP API" (``http-api-mutual-tls``), section *Configuring your truststore*:
  the truststore is one PEM file of X.509 certificates; "Certificates can have a maximum
  chain length of four"; supported: "SHA-256 or stronger", "RSA-2048 or stronger",
  "ECDSA-256 or stronger"; API Gateway validates X.509 syntax, integrity (the
  signature), validity ("the certificate's validity period must be current") and
  name/key chaining ("the names and subjects of certificates must form an unbroken chain").
  Warnings are produced only when the domain is updated; an expiring certificate is
  never reported afterwards — hence the ``expires_soon`` warning here.
- The caps of 1,000 certificates and 1 MB per truststore file, the curve list (P-256,
  P-384) and CA:true come from the issue that asked for this check (API Gateway's
  current limits); the stored copies of the guide consulted did not state them, so they
  are kept as named constants. P-521 is refused: "ECDSA-256 or stronger" in the older
  guide reads as allowing it, the current list does not, and nothing here issues P-521.

Rules (``error`` blocks the upload, ``warning`` is printed):

====================  =======  ====================================================
code                  level    rule
====================  =======  ====================================================
empty / not_pem       error    the file holds at least one PEM ``CERTIFICATE`` block
not_a_certificate     error    no other PEM blocks (a private key is never uploaded)
certificate_malformed error    every block parses as a DER X.509 certificate
too_large             error    at most ``MAX_BYTES`` (1 MB)
too_many_certificates error    at most ``MAX_CERTIFICATES`` (1,000)
key_unsupported       error    RSA >= 2048 bits, or ECDSA on P-256 / P-384
weak_signature_hash   error    signed with SHA-256, SHA-384 or SHA-512
not_a_ca              error    basicConstraints present with CA:true
expired               error    not after ``now``
not_chained           error    the issuer is in the file (a root is self-signed)
signature_invalid     error    the signature verifies with the issuer's key in the file
chain_too_long        error    at most ``MAX_CHAIN`` (4) certificates up to a root
not_yet_valid         warning  not before ``now`` is in the future
expires_soon          warning  expires within ``expiry_warning`` (30 days)
no_cert_sign          warning  a keyUsage extension without keyCertSign
duplicate             warning  a DER-identical certificate appears twice
stray_text            warning  text outside the PEM blocks
====================  =======  ====================================================
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "MAX_BYTES",
    "MAX_CERTIFICATES",
    "MAX_CHAIN",
    "Severity",
    "TruststoreProblem",
    "check_truststore",
    "errors_of",
    "warnings_of",
]

MAX_BYTES = 1_000_000  # "1 MB": the stricter (decimal) reading, so a file we pass cannot be too big
MAX_CERTIFICATES = 1_000
MAX_CHAIN = 4
MIN_RSA_BITS = 2048
CURVES = frozenset({"secp256r1", "secp384r1"})
HASHES = frozenset({"sha256", "sha384", "sha512"})
EXPIRY_WARNING = timedelta(days=30)

Severity = Literal["error", "warning"]

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class TruststoreProblem:
    """One broken rule. ``message`` is one line naming the certificate (or the file)."""

    severity: Severity
    code: str
    message: str
    index: int | None = None  # 1-based position of the certificate in the file; None: the whole file
    subject: str | None = None
    fingerprint_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    index: int
    line: int
    certificate: x509.Certificate
    fingerprint: str

    @property
    def label(self) -> str:
        subject = self.certificate.subject.rfc4514_string() or "(empty subject)"
        return f"certificate #{self.index} {subject!r} (line {self.line}, SHA-256 {self.fingerprint[:16]})"


def errors_of(problems: Sequence[TruststoreProblem]) -> tuple[TruststoreProblem, ...]:
    return tuple(p for p in problems if p.severity == "error")


def warnings_of(problems: Sequence[TruststoreProblem]) -> tuple[TruststoreProblem, ...]:
    return tuple(p for p in problems if p.severity == "warning")


def check_truststore(
    pem: bytes, *, now: datetime, expiry_warning: timedelta = EXPIRY_WARNING
) -> tuple[TruststoreProblem, ...]:
    """Every way ``pem`` breaks API Gateway's truststore rules at ``now``, errors first, in file order.

    An empty tuple means API Gateway should take the file without warnings. Never raises
    for bad input: an unreadable file is itself a problem.
    """
    problems: list[TruststoreProblem] = []
    if len(pem) > MAX_BYTES:
        problems.append(
            _file_problem("too_large", f"the truststore is {len(pem):,} bytes; API Gateway takes at most {MAX_BYTES:,}")
        )
    entries = _parse(pem, problems)
    if not entries and not any(p.severity == "error" for p in problems):
        code = "empty" if not pem.strip() else "not_pem"
        problems.append(_file_problem(code, "the truststore holds no PEM CERTIFICATE block"))
    if len(entries) > MAX_CERTIFICATES:
        problems.append(
            _file_problem(
                "too_many_certificates",
                f"the truststore holds {len(entries):,} certificates; API Gateway takes at most {MAX_CERTIFICATES:,}",
            )
        )
    seen: dict[str, _Entry] = {}
    for entry in entries:
        first = seen.setdefault(entry.fingerprint, entry)
        if first is not entry:
            problems.append(_problem("warning", "duplicate", entry, f"is the same as certificate #{first.index}"))
            continue
        problems.extend(_certificate_problems(entry, now=now, expiry_warning=expiry_warning))
    problems.extend(_chain_problems(list(seen.values())))
    problems.sort(key=lambda p: (p.severity != "error", p.index or 0))
    return tuple(problems)


def _parse(pem: bytes, problems: list[TruststoreProblem]) -> list[_Entry]:
    entries: list[_Entry] = []
    position = 0
    stray = False
    for match in _PEM.finditer(pem):
        stray = stray or bool(pem[position : match.start()].strip())
        position = match.end()
        line = pem.count(b"\n", 0, match.start()) + 1
        label = match.group(1).decode()
        if label != "CERTIFICATE":
            hint = "; never upload a key" if "KEY" in label else ""
            problems.append(
                _file_problem("not_a_certificate", f"line {line}: a {label} block is not a certificate{hint}")
            )
            continue
        try:
            der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
            certificate = x509.load_der_x509_certificate(der)
        except (binascii.Error, ValueError) as exc:
            problems.append(
                _file_problem(
                    "certificate_malformed",
                    f"certificate #{len(entries) + 1} (line {line}) is not valid X.509: {_first_line(exc)}",
                )
            )
            continue
        fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
        entries.append(_Entry(index=len(entries) + 1, line=line, certificate=certificate, fingerprint=fingerprint))
    if stray or pem[position:].strip():
        problems.append(TruststoreProblem("warning", "stray_text", "the truststore has text outside its PEM blocks"))
    return entries


def _certificate_problems(entry: _Entry, *, now: datetime, expiry_warning: timedelta) -> list[TruststoreProblem]:
    cert = entry.certificate
    found: list[TruststoreProblem] = []
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            found.append(
                _problem("error", "key_unsupported", entry, f"has an RSA-{key.key_size} key; RSA-2048 or more")
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in CURVES:
            found.append(
                _problem("error", "key_unsupported", entry, f"has an ECDSA {key.curve.name} key; P-256 or P-384 only")
            )
    else:
        found.append(
            _problem("error", "key_unsupported", entry, f"has a {type(key).__name__} key; RSA or ECDSA P-256/P-384")
        )
    try:
        digest = cert.signature_hash_algorithm
        digest_name = digest.name if digest is not None else "no separate hash (EdDSA)"
    except UnsupportedAlgorithm:
        digest_name = f"signature algorithm {cert.signature_algorithm_oid.dotted_string}"
    if digest_name not in HASHES:
        found.append(
            _problem("error", "weak_signature_hash", entry, f"is signed with {digest_name}; SHA-256 or stronger")
        )
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        found.append(_problem("error", "not_a_ca", entry, "is not a CA (basicConstraints CA:true is missing)"))
    else:
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            if not usage.key_cert_sign:
                found.append(_problem("warning", "no_cert_sign", entry, "has a keyUsage without keyCertSign"))
        except x509.ExtensionNotFound:
            pass
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        found.append(_problem("error", "expired", entry, f"expired at {not_after.isoformat()}"))
    elif not_after - now <= expiry_warning:
        found.append(_problem("warning", "expires_soon", entry, f"expires at {not_after.isoformat()}"))
    if cert.not_valid_before_utc > now:
        found.append(
            _problem("warning", "not_yet_valid", entry, f"is not valid before {cert.not_valid_before_utc.isoformat()}")
        )
    return found


def _signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool | None:
    """True if ``parent``'s key verifies ``child``'s signature, False if not, None if it cannot be checked."""
    try:
        child.verify_directly_issued_by(parent)
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # A weak or unknown signature algorithm (reported by weak_signature_hash): the names
        # still chain, so the chain length is measured as if it verified.
        return None
    return True


def _chain_problems(entries: list[_Entry]) -> list[TruststoreProblem]:
    """not_chained / signature_invalid / chain_too_long: the shortest path from each certificate to a root."""
    by_subject: dict[x509.Name, list[_Entry]] = {}
    for entry in entries:
        by_subject.setdefault(entry.certificate.subject, []).append(entry)
    parents: dict[int, list[int]] = {}
    found: list[TruststoreProblem] = []
    broken: set[int] = set()
    for child in entries:
        named = by_subject.get(child.certificate.issuer, [])
        if not named:
            found.append(
                _problem(
                    "error",
                    "not_chained",
                    child,
                    f"is issued by {child.certificate.issuer.rfc4514_string()!r}, which is not in the truststore",
                )
            )
            broken.add(child.index)
            continue
        links = [p.index for p in named if _signed_by(child.certificate, p.certificate) is not False]
        if not links:
            found.append(
                _problem(
                    "error",
                    "signature_invalid",
                    child,
                    "has a signature that no certificate named as its issuer in the truststore verifies",
                )
            )
            broken.add(child.index)
            continue
        parents[child.index] = links
    # Chain length in certificates, root = 1; relax until stable (at most len(entries) rounds).
    depth = {i: 1 for i, links in parents.items() if i in links}
    for _ in range(len(entries)):
        changed = False
        for i, links in parents.items():
            best = min((depth[p] + 1 for p in links if p in depth and p != i), default=None)
            if best is not None and (i not in depth or best < depth[i]):
                depth[i] = best
                changed = True
        if not changed:
            break
    for entry in entries:
        if entry.index in broken:
            continue
        if entry.index not in depth:
            found.append(
                _problem("error", "not_chained", entry, "does not chain to a self-signed root in the truststore")
            )
        elif depth[entry.index] > MAX_CHAIN:
            found.append(
                _problem(
                    "error",
                    "chain_too_long",
                    entry,
                    f"is {depth[entry.index]} certificates from its root; API Gateway allows {MAX_CHAIN}",
                )
            )
    return found


def _problem(severity: Severity, code: str, entry: _Entry, what: str) -> TruststoreProblem:
    return TruststoreProblem(
        severity=severity,
        code=code,
        message=f"{entry.label} {what}",
        index=entry.index,
        subject=entry.certificate.subject.rfc4514_string(),
        fingerprint_sha256=entry.fingerprint,
    )


def _file_problem(code: str, message: str) -> TruststoreProblem:
    return TruststoreProblem(severity="error", code=code, message=message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
