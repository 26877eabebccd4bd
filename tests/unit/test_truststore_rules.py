"""API Gateway's truststore rules (``ca.truststore_rules``): each rule accepted and refused, the certificate named.

Offending CA certificates are built with cryptography; the SHA-1 one with the ``openssl``
command line (cryptography no longer signs with SHA-1).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ca.hierarchy import create_hierarchy
from ca.truststore import build_truststore
from ca.truststore_rules import MAX_BYTES, MAX_CERTIFICATES, TruststoreProblem, check_truststore, errors_of

NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
P256 = ec.generate_private_key(ec.SECP256R1())  # one key for the many-certificate cases: key generation is slow


@dataclass(frozen=True)
class CA:
    certificate: x509.Certificate
    key: Any

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(
    cn: str,
    *,
    parent: CA | None = None,
    key: Any = None,
    digest: hashes.HashAlgorithm | None = hashes.SHA256(),
    ca: bool | None = True,
    key_cert_sign: bool | None = True,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
    extra: bytes | None = None,
) -> CA:
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(parent.certificate.subject if parent else name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_cert_sign is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=not key_cert_sign,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if extra is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), extra), critical=False
        )
    signer = parent.key if parent else key
    return CA(builder.sign(signer, digest), key)


def join(*cas: CA) -> bytes:
    return b"".join(c.pem for c in cas)


def codes(problems: Sequence[TruststoreProblem]) -> list[tuple[str, str]]:
    return [(p.severity, p.code) for p in problems]


def only(problems: Sequence[TruststoreProblem], code: str) -> TruststoreProblem:
    matching = [p for p in problems if p.code == code]
    assert len(matching) == 1, problems
    return matching[0]


@pytest.fixture(scope="module")
def root() -> CA:
    return make_ca("Test Root", key=ec.generate_private_key(ec.SECP384R1()), digest=hashes.SHA384())


# -- accepted ---------------------------------------------------------------------------------


def test_the_service_s_own_truststore_passes_every_rule() -> None:
    hierarchy = create_hierarchy(now=NOW - timedelta(days=1))
    pem = build_truststore([hierarchy.issuing.certificate], [hierarchy.root.certificate])
    assert check_truststore(pem, now=NOW) == ()


def test_rsa_2048_and_4096_p384_and_sha384_sha512_are_accepted() -> None:
    rsa_root = make_ca("RSA Root", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    rsa_4096 = make_ca("RSA 4096", parent=rsa_root, key=rsa.generate_private_key(public_exponent=65537, key_size=4096))
    p384 = make_ca("P-384", parent=rsa_4096, key=ec.generate_private_key(ec.SECP384R1()), digest=hashes.SHA512())
    assert check_truststore(join(p384, rsa_4096, rsa_root), now=NOW) == ()


def test_a_chain_of_four_is_accepted_and_a_chain_of_five_is_refused_naming_the_fifth(root: CA) -> None:
    one = make_ca("Level 1", parent=root)
    two = make_ca("Level 2", parent=one)
    three = make_ca("Level 3", parent=two)
    assert check_truststore(join(three, two, one, root), now=NOW) == ()
    four = make_ca("Level 4", parent=three)
    problems = check_truststore(join(four, three, two, one, root), now=NOW)
    assert codes(problems) == [("error", "chain_too_long")]
    assert "'CN=Level 4'" in problems[0].message and "5 certificates" in problems[0].message
    assert problems[0].index == 1


# -- keys, signatures, CA flag ----------------------------------------------------------------


def test_rsa_1024_is_refused(root: CA) -> None:
    weak = make_ca("Weak RSA", parent=root, key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    problem = only(check_truststore(join(weak, root), now=NOW), "key_unsupported")
    assert problem.severity == "error" and "'CN=Weak RSA'" in problem.message and "RSA-1024" in problem.message


def test_p521_is_refused(root: CA) -> None:
    big = make_ca("P-521 CA", parent=root, key=ec.generate_private_key(ec.SECP521R1()), digest=hashes.SHA512())
    problem = only(check_truststore(join(big, root), now=NOW), "key_unsupported")
    assert "'CN=P-521 CA'" in problem.message and "secp521r1" in problem.message


def test_ed25519_is_refused_for_its_key_and_its_signature() -> None:
    ed = make_ca("Ed Root", key=ed25519.Ed25519PrivateKey.generate(), digest=None)
    assert sorted(codes(check_truststore(ed.pem, now=NOW))) == [
        ("error", "key_unsupported"),
        ("error", "weak_signature_hash"),
    ]


def test_sha1_signature_is_refused_without_breaking_the_chain(tmp_path: Path) -> None:
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-sha1", "-days", "3650", "-subj", "/CN=SHA1 Root",
         "-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        check=True, capture_output=True,
    )  # fmt: skip
    problems = check_truststore(cert.read_bytes(), now=datetime.now(UTC))
    assert codes(problems) == [("error", "weak_signature_hash")]
    assert "'CN=SHA1 Root'" in problems[0].message and "sha1" in problems[0].message


def test_sha224_is_refused(root: CA) -> None:
    weak = make_ca("SHA-224 CA", parent=root, digest=hashes.SHA224())
    assert "'CN=SHA-224 CA'" in only(check_truststore(join(weak, root), now=NOW), "weak_signature_hash").message


def test_a_leaf_or_a_certificate_without_basic_constraints_is_refused(root: CA) -> None:
    leaf = make_ca("machine-1", parent=root, ca=False, key_cert_sign=False)
    bare = make_ca("No Constraints", parent=root, ca=None)
    problems = check_truststore(join(leaf, bare, root), now=NOW)
    assert codes(problems) == [("error", "not_a_ca"), ("error", "not_a_ca")]
    assert "'CN=machine-1'" in problems[0].message and "'CN=No Constraints'" in problems[1].message


def test_a_ca_whose_key_usage_lacks_cert_sign_is_a_warning(root: CA) -> None:
    odd = make_ca("Odd Usage", parent=root, key_cert_sign=False)
    problems = check_truststore(join(odd, root), now=NOW)
    assert codes(problems) == [("warning", "no_cert_sign")]


# -- chaining ---------------------------------------------------------------------------------


def test_an_issuing_ca_without_its_root_is_refused(root: CA) -> None:
    orphan = make_ca("Orphan", parent=root)
    problem = only(check_truststore(orphan.pem, now=NOW), "not_chained")
    assert problem.severity == "error" and "'CN=Orphan'" in problem.message and "CN=Test Root" in problem.message


def test_a_signature_from_another_key_with_the_issuer_s_name_is_refused(root: CA) -> None:
    impostor = make_ca("Test Root", key=ec.generate_private_key(ec.SECP384R1()), digest=hashes.SHA384())
    child = make_ca("Child", parent=impostor)
    problem = only(check_truststore(join(child, root), now=NOW), "signature_invalid")
    assert "'CN=Child'" in problem.message


# -- validity ---------------------------------------------------------------------------------


def test_expired_is_an_error_and_expiring_or_not_yet_valid_are_warnings(root: CA) -> None:
    expired = make_ca("Expired", parent=root, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1))
    soon = make_ca("Soon", parent=root, not_after=NOW + timedelta(days=10))
    future = make_ca("Future", parent=root, not_before=NOW + timedelta(hours=1))
    problems = check_truststore(join(expired, soon, future, root), now=NOW)
    assert codes(problems) == [("error", "expired"), ("warning", "expires_soon"), ("warning", "not_yet_valid")]
    assert "'CN=Expired'" in problems[0].message
    assert check_truststore(join(soon, root), now=NOW, expiry_warning=timedelta(days=1)) == ()


# -- the file ---------------------------------------------------------------------------------


def test_more_than_1000_certificates_are_refused_and_1000_are_accepted() -> None:
    roots = [make_ca(f"Root {i}", key=P256) for i in range(MAX_CERTIFICATES + 1)]
    assert check_truststore(join(*roots[:MAX_CERTIFICATES]), now=NOW) == ()
    problems = check_truststore(join(*roots), now=NOW)
    assert codes(problems) == [("error", "too_many_certificates")]
    assert "1,001" in problems[0].message


def test_a_file_over_1_mb_is_refused() -> None:
    fat = [make_ca(f"Fat {i}", key=P256, extra=b"\x00" * 90_000) for i in range(9)]
    pem = join(*fat)
    assert len(pem) > MAX_BYTES
    assert codes(check_truststore(pem, now=NOW)) == [("error", "too_large")]
    assert check_truststore(join(*fat[:6]), now=NOW) == ()


def test_a_private_key_block_is_refused(root: CA) -> None:
    key_pem = P256.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    problem = only(check_truststore(root.pem + key_pem, now=NOW), "not_a_certificate")
    assert "PRIVATE KEY" in problem.message and "never upload a key" in problem.message


def test_empty_der_and_malformed_files_are_refused(root: CA) -> None:
    assert codes(check_truststore(b"", now=NOW)) == [("error", "empty")]
    der = root.certificate.public_bytes(serialization.Encoding.DER)
    assert codes(check_truststore(der, now=NOW)) == [("error", "not_pem"), ("warning", "stray_text")]
    broken = b"-----BEGIN CERTIFICATE-----\nTUlJ\n-----END CERTIFICATE-----\n"
    assert ("error", "certificate_malformed") in codes(check_truststore(root.pem + broken, now=NOW))


def test_duplicates_and_stray_text_are_warnings(root: CA) -> None:
    problems = check_truststore(b"# comment\n" + root.pem + root.pem, now=NOW)
    assert sorted(codes(problems)) == [("warning", "duplicate"), ("warning", "stray_text")]
    assert errors_of(problems) == ()
