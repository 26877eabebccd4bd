"""TLS for ``issuer serve``: the server context from PEM files, and the client certificate of a request.

Files are checked one by one before OpenSSL sees them, so a bad start-up names the
file and what is wrong with it (missing, unreadable, not PEM, encrypted key, key not
matching the certificate) in one line instead of an OpenSSL error stack.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from issuer.http.server_config import ServeError

__all__ = ["peer_certificate", "tls_context"]

_CODE = "tls_files_invalid"


def tls_context(
    cert: Path, key: Path, *, client_ca: Path | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``cert`` (PEM chain, leaf first) with ``key`` (unencrypted PEM).

    With ``client_ca`` (PEM bundle), clients *may* present a certificate, which is then
    verified against it during the handshake (``CERT_OPTIONAL``; a client presenting an
    untrusted or expired certificate fails the handshake); ``require_client_cert`` makes
    one mandatory. Read the verified certificate with :func:`peer_certificate`.

    Raises :class:`ServeError` (``tls_files_invalid``) naming the file at fault;
    ``ValueError`` for ``require_client_cert`` without ``client_ca``.
    """
    if require_client_cert and client_ca is None:
        raise ValueError("require_client_cert needs client_ca")
    leaf = _certificates(cert, "certificate")[0]
    private_key = _private_key(key)
    if leaf.public_key() != private_key.public_key():
        raise ServeError(f"TLS key {key} does not match the certificate {cert}", code=_CODE)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ServeError(f"cannot load TLS certificate {cert} with key {key}: {_reason(exc)}", code=_CODE) from exc
    if client_ca is not None:
        _certificates(client_ca, "client CA bundle")
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ServeError(f"cannot load TLS client CA bundle {client_ca}: {_reason(exc)}", code=_CODE) from exc
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def peer_certificate(request: web.BaseRequest) -> bytes | None:
    """DER of the client certificate the TLS handshake of ``request``'s connection verified.

    ``None`` over plain HTTP or when the client sent no certificate. A certificate is only
    there if the handshake verified it: a context without a client CA (``CERT_NONE``) never
    asks for one, and with one, an unverifiable certificate fails the handshake.
    """
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return ssl_object.getpeercert(binary_form=True)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServeError(f"cannot read TLS {what} {path}: {exc.strerror or exc}", code=_CODE) from exc


def _certificates(path: Path, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ServeError(f"TLS {what} {path} is not a PEM certificate file", code=_CODE) from exc
    return certificates


def _private_key(path: Path) -> PrivateKeyTypes:
    data = _read(path, "key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise ServeError(f"TLS key {path} is encrypted; give an unencrypted key", code=_CODE) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ServeError(f"TLS key {path} is not a PEM private key", code=_CODE) from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
