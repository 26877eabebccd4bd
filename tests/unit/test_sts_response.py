"""What the service makes of STS's answer (the pure part of the STS client)."""

from __future__ import annotations

import aiohttp
import pytest

from issuer.attest.sts_response import parse_sts_response
from issuer.aws.sts import AiohttpStsCaller
from issuer.errors import ConfigError, Unauthorized, UpstreamUnavailable

NS = "https://sts.amazonaws.com/doc/2011-06-15/"

# As documented in the STS API reference (GetCallerIdentity, example response).
OK = f"""<GetCallerIdentityResponse xmlns="{NS}">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/my-role-name/my-role-session-name</Arn>
    <UserId>ARO123EXAMPLE123:my-role-session-name</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>""".encode()


def sts_error(code: str) -> bytes:
    return (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>no</Message></Error><RequestId>1</RequestId></ErrorResponse>"
    ).encode()


def moto_error(code: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error>'
        f"<Code>{code}</Code><Message>no</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"
    ).encode()


def test_caller_identity_from_a_200() -> None:
    caller = parse_sts_response(200, OK)
    assert caller.arn == "arn:aws:sts::123456789012:assumed-role/my-role-name/my-role-session-name"
    assert caller.account_id == "123456789012"
    assert caller.user_id == "ARO123EXAMPLE123:my-role-session-name"


@pytest.mark.parametrize(
    "body",
    [
        OK.replace(NS.encode(), b"https://evil.example/doc/"),  # wrong namespace
        OK.replace(b"GetCallerIdentityResponse", b"AssumeRoleResponse"),
        OK.replace(b"<Account>123456789012</Account>", b""),
        OK.replace(b"<Account>123456789012</Account>", b"<Account></Account>"),
        OK.replace(
            b"</GetCallerIdentityResult>", b"<Arn>arn:aws:iam::999999999999:root</Arn></GetCallerIdentityResult>"
        ),
        OK.replace(b"<Account>123456789012</Account>", b"<Account><x>1</x></Account>"),
        b'<!DOCTYPE r [<!ENTITY a "123456789012">]>' + OK.replace(b">123456789012<", b">&a;<"),
        b"<html><body>Welcome to the captive portal</body></html>",
        b"",
        b"{}",
        sts_error("SignatureDoesNotMatch"),
    ],
)
def test_a_200_that_is_not_a_caller_identity_is_unavailable(body: bytes) -> None:
    with pytest.raises(UpstreamUnavailable) as caught:
        parse_sts_response(200, body)
    assert caught.value.code == "sts_unavailable"
    assert caught.value.status_hint == 503


@pytest.mark.parametrize(
    "code",
    [
        "SignatureDoesNotMatch",
        "InvalidClientTokenId",
        "ExpiredToken",
        "AccessDenied",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    ],
)
@pytest.mark.parametrize("shape", [sts_error, moto_error])
def test_credential_and_signature_errors_are_rejections(code: str, shape: object) -> None:
    assert callable(shape)
    with pytest.raises(Unauthorized) as caught:
        parse_sts_response(403, shape(code))
    assert caught.value.code == "sts_rejected"
    assert code in caught.value.reason
    assert code not in caught.value.detail


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, sts_error("Throttling")),
        (400, sts_error("InvalidAction")),
        (400, sts_error("")),
        (403, b"<html><body>Forbidden</body></html>"),
        (403, b"<ErrorResponse><Error><Code>AccessDenied</Code></Error><Error><Code>X</Code></Error></ErrorResponse>"),
        (302, b""),
        (301, sts_error("SignatureDoesNotMatch")),
        (500, sts_error("InternalFailure")),
        (503, b"Service Unavailable"),
        (201, OK),
        (500, sts_error("SignatureDoesNotMatch")),  # a 5xx is never the client's fault
    ],
)
def test_everything_else_is_unavailable(status: int, body: bytes) -> None:
    with pytest.raises(UpstreamUnavailable) as caught:
        parse_sts_response(status, body)
    assert caught.value.code == "sts_unavailable"
    assert caught.value.retry_after is not None


def test_billion_laughs_is_refused_without_expansion() -> None:
    lol = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY l "lol">'
        + b"".join(f'<!ENTITY l{i} "{"&l;" * 10 if i == 1 else f"&l{i - 1};" * 10}">'.encode() for i in range(1, 10))
        + b"]><ErrorResponse><Error><Code>&l9;</Code></Error></ErrorResponse>"
    )
    with pytest.raises(UpstreamUnavailable):
        parse_sts_response(403, lol)


@pytest.mark.parametrize("base", ["ftp://127.0.0.1/", "127.0.0.1:5000", "http://127.0.0.1:5000/?x=1", "http:///x"])
async def test_endpoint_overrides_must_be_base_urls(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError):
            AiohttpStsCaller(session=session, endpoint_overrides={"sts.amazonaws.com": base})


async def test_override_or_the_real_host() -> None:
    async with aiohttp.ClientSession() as session:
        caller = AiohttpStsCaller(session=session, endpoint_overrides={"sts.amazonaws.com": "http://127.0.0.1:5000"})
        assert caller.url_for("sts.amazonaws.com") == "http://127.0.0.1:5000/"
        assert caller.url_for("sts.eu-west-1.amazonaws.com") == "https://sts.eu-west-1.amazonaws.com/"
