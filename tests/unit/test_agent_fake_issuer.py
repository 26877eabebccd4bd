"""A stand-in issuer for the agent's renewal and daemon tests, and the tests that it really checks.

:class:`FakeIssuer` implements the v1 contract the agent relies on, from the spec
rather than from the agent's code: it verifies renewal proof-of-possession JWSs
with ``cryptography`` (alg matches the x5c key, signature as raw r||s, aud, iat/exp
at most 300 s apart, jti single use, csr_sha256, sub), or an mTLS client
certificate, tracks each certificate's status (active, superseded, revoked), and
signs with a throwaway CA made here. It is reachable in-process (``connect``, the
agent's transport seam, on an injected clock) and over real HTTP (``http_app``,
with the TLS peer certificate for mTLS).

The tests at the bottom check that the fake refuses what the real issuer must
refuse, so a renewal test passing against it means something.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional, Union

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clients.agent.http import ClientCertificate
from clients.errors import ServerProblem, TransportError

Json = dict[str, Any]
T0 = datetime(2031, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
SERVER_ID = "issuer.test.example"


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class TestCA:
    __test__ = False  # not a test class

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    issuing: x509.Certificate

    @classmethod
    def create(cls) -> TestCA:
        start, end = datetime(2020, 1, 1, tzinfo=timezone.utc), datetime(2040, 1, 1, tzinfo=timezone.utc)
        root_key, issuing_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP256R1())
        ca_usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        root = (
            x509.CertificateBuilder().subject_name(name("Agent Test Root")).issuer_name(name("Agent Test Root"))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(ca_usage, critical=True)
            .sign(root_key, hashes.SHA384())
        )  # fmt: skip
        issuing = (
            x509.CertificateBuilder().subject_name(name("Agent Test Issuing")).issuer_name(root.subject)
            .public_key(issuing_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ca_usage, critical=True)
            .sign(root_key, hashes.SHA384())
        )  # fmt: skip
        return cls(root_key, root, issuing_key, issuing)

    def issue(self, public_key: Any, *, not_before: datetime, not_after: datetime, uri: str) -> x509.Certificate:
        return (
            x509.CertificateBuilder().subject_name(name("machine")).issuer_name(self.issuing.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(self.issuing_key, hashes.SHA256())
        )  # fmt: skip


# --- the proof-of-possession token, checked from RFC 7515/7518 and the contract --------------------


class Refused(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_JTI = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def b64url_decode(part: str) -> bytes:
    if not _B64URL.match(part):  # url-safe alphabet, no padding
        raise Refused(401, "renew_token_invalid")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def expected_alg(public_key: Any) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384"}[public_key.curve.name]
    raise Refused(401, "renew_token_invalid")


def verify_pop(token: str, *, audience: str, csr_der: bytes, now: datetime, seen_jti: set[str]) -> x509.Certificate:
    """Check a renewal token as the issuer must; return the x5c leaf or raise :class:`Refused`."""
    parts = token.split(".")
    if len(parts) != 3:
        raise Refused(401, "renew_token_invalid")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        x5c = header["x5c"]
        leaf = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        raise Refused(401, "renew_token_invalid") from None
    public_key = leaf.public_key()
    if header.get("typ") != "JWT" or header.get("alg") != expected_alg(public_key):
        raise Refused(401, "renew_token_invalid")
    signed, signature = f"{parts[0]}.{parts[1]}".encode(), b64url_decode(parts[2])
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            size = (public_key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:  # raw r||s, not DER
                raise Refused(401, "renew_token_invalid")
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            digest = hashes.SHA384() if header["alg"] == "ES384" else hashes.SHA256()
            public_key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(digest))
    except InvalidSignature:
        raise Refused(401, "renew_token_invalid") from None
    iat, exp = claims.get("iat"), claims.get("exp")
    if not (type(iat) is int and type(exp) is int and 0 < exp - iat <= 300):
        raise Refused(401, "renew_token_invalid")
    if claims.get("aud") != audience:
        raise Refused(401, "renew_audience_mismatch")
    if not iat - 60 <= now.timestamp() < exp:
        raise Refused(401, "renew_token_expired")
    if claims.get("sub") != format(leaf.serial_number, "x"):
        raise Refused(401, "renew_token_invalid")
    if claims.get("csr_sha256") != hashlib.sha256(csr_der).hexdigest():
        raise Refused(401, "renew_csr_mismatch")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not _JTI.match(jti):
        raise Refused(401, "renew_token_invalid")
    if jti in seen_jti:
        raise Refused(401, "renew_token_replayed")
    seen_jti.add(jti)
    return leaf


# --- the fake issuer --------------------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    body: Json
    headers: dict[str, str]
    client_cert: x509.Certificate | None
    at: datetime


# A scripted answer: (status, problem code, Retry-After), an exception for the transport to raise,
# or None to answer normally.
Scripted = Union[tuple[int, str, Optional[str]], Exception, None]


@dataclass
class FakeIssuer:
    ca: TestCA
    now: Callable[[], datetime]
    lifetime: timedelta = timedelta(hours=24)
    server_id: str = SERVER_ID
    announce_server_id: bool = True
    tokens: set[str] = field(default_factory=set)
    # Per path, answers to give instead of the normal ones, first come first served.
    script: dict[str, list[Scripted]] = field(default_factory=dict)
    # Refuse every renewal with this code (after the proof was checked).
    refuse_renewals: str | None = None
    # Unreachable while start <= now() < end.
    outage: tuple[datetime, datetime] | None = None
    seen: list[Seen] = field(default_factory=list)
    certificates: dict[str, x509.Certificate] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    jti: set[str] = field(default_factory=set)

    def connect(self, client_certificate: ClientCertificate | None) -> FakeTransport:
        """The agent's transport seam; with a client certificate, like a TLS handshake: the pair must match."""
        presented = None
        if client_certificate is not None:
            chain = x509.load_pem_x509_certificates(client_certificate.fullchain.read_bytes())
            key = serialization.load_pem_private_key(client_certificate.key.read_bytes(), password=None)
            spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            assert chain[0].public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
            presented = chain[0]
        return FakeTransport(self, presented)

    def issued(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def handle(self, path: str, body: Json, headers: Mapping[str, str], client_cert: x509.Certificate | None) -> Any:
        """Return ``(status, json, headers)``; raise an exception the transport should raise."""
        now = self.now()
        self.seen.append(Seen(path, dict(body), dict(headers), client_cert, now))
        if self.outage is not None and self.outage[0] <= now < self.outage[1]:
            raise TransportError("connection refused", code="server_unreachable")
        scripted = self.script[path].pop(0) if self.script.get(path) else None
        if isinstance(scripted, Exception):
            raise scripted
        if scripted is not None:
            status, code, retry_after = scripted
            return status, {"status": status, "code": code, "detail": code}, {"Retry-After": retry_after}
        try:
            csr = x509.load_pem_x509_csr(body["csr"].encode())
            assert csr.is_signature_valid
            if path == "/v1/renew":
                return 201, self._renew(csr, headers, client_cert, now), {}
            method = path.removeprefix("/v1/issue/")
            if method == "token":
                if body.get("token") not in self.tokens:
                    raise Refused(401, "token_invalid")
                self.tokens.discard(body["token"])
            return 201, self._issue(csr, method=method, now=now), {}
        except Refused as exc:
            return exc.status, {"status": exc.status, "code": exc.code, "detail": exc.code}, {}

    def _renew(self, csr: x509.CertificateSigningRequest, headers: Mapping[str, str], tls: Any, now: datetime) -> Json:
        authorization = {k.lower(): v for k, v in headers.items()}.get("authorization")
        csr_der = csr.public_bytes(serialization.Encoding.DER)
        if authorization:
            if not authorization.startswith("Bearer "):
                raise Refused(401, "renew_token_invalid")
            old = verify_pop(authorization[7:], audience=self.server_id, csr_der=csr_der, now=now, seen_jti=self.jti)
        elif tls is not None:
            old = tls
        else:
            raise Refused(401, "renew_auth_missing")
        serial = format(old.serial_number, "x")
        if self.certificates.get(serial) != old:
            raise Refused(401, "renew_certificate_unknown")
        if self.status[serial] in ("revoked", "superseded"):
            raise Refused(403, f"certificate_{self.status[serial]}")
        if now >= old.not_valid_after_utc:
            raise Refused(403, "certificate_expired")
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if csr.public_key().public_bytes(*spki) == old.public_key().public_bytes(*spki):
            raise Refused(400, "renew_same_key")
        if self.refuse_renewals:
            raise Refused(403, self.refuse_renewals)
        answer = self._issue(csr, method="renew", now=now)
        self.status[serial] = "superseded"
        return {**answer, "renewed_from": serial}

    def _issue(self, csr: x509.CertificateSigningRequest, *, method: str, now: datetime) -> Json:
        now = now.replace(microsecond=0)  # X.509 times are whole seconds
        not_before = now - timedelta(seconds=60)
        not_after = now + self.lifetime
        cert = self.ca.issue(
            csr.public_key(), not_before=not_before, not_after=not_after, uri=f"spiffe://test.example/{method}/m-1"
        )
        serial = format(cert.serial_number, "x")
        self.certificates[serial], self.status[serial] = cert, "active"
        answer: Json = {
            "serial": serial,
            "certificate": pem(cert),
            "chain": pem(self.ca.issuing),
            "bundle": pem(self.ca.root),
            "not_before": not_before.isoformat(),
            "not_after": not_after.isoformat(),
            "renew_after": (not_before + (not_after - not_before) * 2 / 3).isoformat(),
            "role": "onprem",
            "identity": {"method": method, "principal": "m-1", "uri_san": f"spiffe://test.example/{method}/m-1"},
        }
        if self.announce_server_id:
            answer["server_id"] = self.server_id
        return answer

    def http_app(self) -> web.Application:
        """The same issuer over HTTP; the mTLS peer certificate comes from the TLS connection."""

        async def handle(request: web.Request) -> web.Response:
            ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
            der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
            peer = x509.load_der_x509_certificate(der) if der else None
            try:
                status, answer, extra = self.handle(request.path, await request.json(), request.headers, peer)
            except TransportError:
                return web.Response(status=503, text="down")
            content_type = "application/json" if status < 400 else "application/problem+json"
            headers = {k: v for k, v in extra.items() if v}
            return web.Response(status=status, text=json.dumps(answer), content_type=content_type, headers=headers)

        async def revoked(request: web.Request) -> web.Response:
            # The shape of the service's GET /v1/revoked (issuer/service/revocation_lists.py).
            listed = sorted(serial for serial, status in self.status.items() if status == "revoked")
            document = {
                "version": 1,
                "generated_at": self.now().isoformat(),
                "serials": listed,
                "entries": [
                    {"serial": s, "revoked_at": self.now().isoformat(), "reason": "keyCompromise"} for s in listed
                ],
            }
            self.seen.append(Seen(request.path, {}, dict(request.headers), None, self.now()))
            return web.json_response(document)

        app = web.Application()
        app.router.add_get("/v1/revoked", revoked)
        app.router.add_post("/v1/renew", handle)
        app.router.add_post("/v1/issue/{method}", handle)
        return app


@dataclass
class FakeTransport:
    issuer: FakeIssuer
    client_cert: x509.Certificate | None

    def post_json(self, path: str, body: Mapping[str, object], *, headers: Mapping[str, str] | None = None) -> Json:
        status, answer, extra = self.issuer.handle(path, dict(body), dict(headers or {}), self.client_cert)
        if status >= 400:
            raise ServerProblem(
                answer["detail"], status=status, code=answer["code"], retry_after=extra.get("Retry-After")
            )
        return dict(answer)


def tls_files(where: Path, ca: TestCA, *, require_client_cert: bool) -> tuple[Path, ssl.SSLContext]:
    """A --ca-bundle for the client and a server context for 127.0.0.1 signed by ``ca``'s issuing CA
    that asks for client certificates from ``ca`` (required, or optional and the handler decides)."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.issuing.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(timezone.utc) - timedelta(hours=1)).not_valid_after(datetime.now(timezone.utc) + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca.issuing_key, hashes.SHA256())
    )  # fmt: skip
    (where / "server.pem").write_text(pem(cert, ca.issuing))
    (where / "server.key").write_bytes(key_pem(key))
    (where / "ca.pem").write_text(pem(ca.root))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(where / "server.pem", where / "server.key")
    context.load_verify_locations(cadata=pem(ca.root, ca.issuing))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return where / "ca.pem", context


# --- the fake checks what the real issuer must check ------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


def _signed(header: Json, claims: Json, key: Any, *, der_signature: bool = False) -> str:
    def enc(value: Json) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{enc(header)}.{enc(claims)}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        if not der_signature:
            from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

            r, s = decode_dss_signature(signature)
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input.decode()}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _case(ca: TestCA) -> tuple[Any, x509.Certificate, bytes, Json, Json]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(key.public_key(), not_before=T0, not_after=T0 + timedelta(days=1), uri="spiffe://t/x")
    csr_der = b"new csr"
    header = {
        "alg": "ES256",
        "typ": "JWT",
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    iat = int(T0.timestamp()) + 100
    claims = {"aud": SERVER_ID, "iat": iat, "exp": iat + 120, "jti": "j" * 32, "csr_sha256": hashlib.sha256(csr_der).hexdigest(), "sub": format(cert.serial_number, "x")}  # fmt: skip
    return key, cert, csr_der, header, claims


def test_the_fake_accepts_a_token_made_to_the_contract(ca: TestCA) -> None:
    key, cert, csr_der, header, claims = _case(ca)
    seen: set[str] = set()
    now = T0 + timedelta(seconds=150)
    assert verify_pop(_signed(header, claims, key), audience=SERVER_ID, csr_der=csr_der, now=now, seen_jti=seen) == cert
    with pytest.raises(Refused) as err:
        verify_pop(_signed(header, claims, key), audience=SERVER_ID, csr_der=csr_der, now=now, seen_jti=seen)
    assert err.value.code == "renew_token_replayed"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda h, c: c.update(aud="other"), "renew_audience_mismatch"),
        (lambda h, c: c.update(exp=c["iat"] + 301), "renew_token_invalid"),
        (lambda h, c: c.update(iat=c["iat"] - 200, exp=c["iat"] - 80), "renew_token_expired"),
        (lambda h, c: c.update(csr_sha256="0" * 64), "renew_csr_mismatch"),
        (lambda h, c: c.update(sub="1"), "renew_token_invalid"),
        (lambda h, c: c.update(jti="short"), "renew_token_invalid"),
        (lambda h, c: h.update(alg="ES384"), "renew_token_invalid"),
        (lambda h, c: h.update(alg="RS256"), "renew_token_invalid"),
        (lambda h, c: h.update(typ="JOSE"), "renew_token_invalid"),
        (lambda h, c: h.update(x5c=[h["x5c"][0].replace("+", "-").replace("/", "_") + "!"]), "renew_token_invalid"),
    ],
)
def test_the_fake_refuses_each_broken_token(ca: TestCA, change: Callable[[Json, Json], None], code: str) -> None:
    key, _, csr_der, header, claims = _case(ca)
    change(header, claims)
    with pytest.raises(Refused) as err:
        verify_pop(_signed(header, claims, key), audience=SERVER_ID, csr_der=csr_der, now=T0 + timedelta(seconds=150), seen_jti=set())  # fmt: skip
    assert err.value.code == code


def test_the_fake_refuses_der_signatures_and_other_keys(ca: TestCA) -> None:
    key, _, csr_der, header, claims = _case(ca)
    now = T0 + timedelta(seconds=150)
    for token in (
        _signed(header, claims, key, der_signature=True),
        _signed(header, claims, ec.generate_private_key(ec.SECP256R1())),
        _signed(header, claims, key) + "=",
    ):
        with pytest.raises(Refused) as err:
            verify_pop(token, audience=SERVER_ID, csr_der=csr_der, now=now, seen_jti=set())
        assert err.value.code == "renew_token_invalid"


def test_the_fake_refuses_renewals_the_issuer_must_refuse(ca: TestCA) -> None:
    from clients.agent.pop import renewal_token
    from clients.keys import build_csr, csr_pem

    now = [T0]
    fake = FakeIssuer(ca=ca, now=lambda: now[0], tokens={"t"})
    old_key = ec.generate_private_key(ec.SECP256R1())
    issued = fake.connect(None).post_json(
        "/v1/issue/token", {"csr": csr_pem(build_csr(old_key, common_name=None)), "token": "t"}
    )
    old = x509.load_pem_x509_certificate(issued["certificate"].encode())

    def attempt(*, key: Any = None, cert: x509.Certificate = old, signer: Any = old_key, auth: bool = True) -> str:
        csr = build_csr(key or ec.generate_private_key(ec.SECP256R1()), common_name=None)
        der = csr.public_bytes(serialization.Encoding.DER)
        token = renewal_token(key=signer, certificate=cert, audience=SERVER_ID, csr_der=der, now=now[0])
        headers = {"Authorization": f"Bearer {token}"} if auth else {}
        try:
            fake.connect(None).post_json("/v1/renew", {"csr": csr_pem(csr)}, headers=headers)
        except ServerProblem as exc:
            return str(exc.code)
        return "renewed"

    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = TestCA.create().issue(
        stranger_key.public_key(), not_before=T0, not_after=T0 + timedelta(days=1), uri="x:y"
    )
    assert attempt(auth=False) == "renew_auth_missing"
    assert attempt(cert=stranger, signer=stranger_key) == "renew_certificate_unknown"
    assert attempt(key=old_key) == "renew_same_key"
    now[0] = old.not_valid_after_utc
    assert attempt() == "certificate_expired"
    now[0] = T0
    fake.status[format(old.serial_number, "x")] = "revoked"
    assert attempt() == "certificate_revoked"
    fake.status[format(old.serial_number, "x")] = "active"
    assert attempt() == "renewed"
    assert attempt() == "certificate_superseded"
