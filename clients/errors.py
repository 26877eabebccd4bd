"""The exception root of the agent.

The agent is a command-line program, so where the service's errors carry an HTTP
status hint, these carry an *exit status* hint (``sysexits.h``); each has a stable ``code``::

    AgentError                 exit 1   failed; a person should look
    ├── UsageError             exit 64  the command line is wrong (options missing or contradictory)
    ├── ConfigError            exit 78  something the command line names cannot be used: --ca-bundle,
    │                                   --token-file, --out, the files in it, an issuer TLS certificate
    │                                   that does not verify against the trust given
    ├── ImdsError              exit 1   the instance metadata service refuses IMDSv2 or lacks the document
    │   └── ImdsUnavailable    exit 75  it kept answering 5xx, timing out or refusing connections (retry later)
    ├── CredentialsError       exit 1   botocore found no usable AWS credentials
    ├── FilesystemError        exit 1   writing the new files failed (disk full, ...)
    ├── TransportError         exit 75  the issuer could not be reached (retry later)
    ├── ServerProblem          exit 1, or 75 for 429/502/503/504, or 77 for identity_denied: the issuer
    │                          answered with an error
    └── ResponseError          exit 1   the issuer's answer is unusable (e.g. a certificate for another key)

Only 75 (``EX_TEMPFAIL``) means "the same command may work later": schedulers
(systemd ``Restart=on-failure`` with ``RestartPreventExitStatus=64 77 78``, cron
wrappers) retry it. 64 and 78 never fix themselves, and 77 (``EX_NOPERM``: the issuer
denies this machine's identity, code ``identity_denied``) lasts until an operator lifts
the denial, so they must never be retried in a loop; 1 is a refusal or a fault a person
should look at.
"""

from __future__ import annotations

__all__ = [
    "EX_CONFIG",
    "EX_FAILURE",
    "EX_NOPERM",
    "EX_TEMPFAIL",
    "EX_USAGE",
    "IDENTITY_DENIED",
    "AgentError",
    "ConfigError",
    "CredentialsError",
    "FilesystemError",
    "ImdsError",
    "ImdsUnavailable",
    "ResponseError",
    "ServerProblem",
    "TransportError",
    "UsageError",
]

EX_FAILURE = 1
EX_USAGE = 64  # sysexits.h EX_USAGE
EX_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL
EX_NOPERM = 77  # sysexits.h EX_NOPERM: the issuer denies this machine's identity
EX_CONFIG = 78  # sysexits.h EX_CONFIG


class AgentError(Exception):
    """Root of every deliberate error of the agent; ``str(err)`` is one line for a person."""

    exit_status: int = EX_FAILURE
    default_code: str = "agent_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def one_line(self) -> str:
        """What the CLI prints: ``<message> (code <code>)``."""
        return f"{self.message} (code {self.code})"

    @property
    def transient(self) -> bool:
        """True when the same request may succeed later without anyone changing anything."""
        return self.exit_status == EX_TEMPFAIL


class UsageError(AgentError):
    exit_status = EX_USAGE
    default_code = "usage"


class ConfigError(AgentError):
    exit_status = EX_CONFIG
    default_code = "config"


class ImdsError(AgentError):
    default_code = "imds_error"


class ImdsUnavailable(ImdsError):
    """The metadata service did not answer usefully (5xx, timeouts, refused connections) for long enough."""

    exit_status = EX_TEMPFAIL
    default_code = "imds_unavailable"


class CredentialsError(AgentError):
    default_code = "aws_credentials_missing"


class FilesystemError(AgentError):
    default_code = "write_failed"


class TransportError(AgentError):
    exit_status = EX_TEMPFAIL
    default_code = "server_unreachable"


class ResponseError(AgentError):
    default_code = "bad_response"


_TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# The issuer's code for an identity on its deny list (kept here: the agent ships without the service).
IDENTITY_DENIED = "identity_denied"


class ServerProblem(AgentError):
    """The issuer answered with an error (``application/problem+json`` when it could)."""

    default_code = "server_error"

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        code: str | None = None,
        request_id: str | None = None,
        title: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(detail, code=code or f"http_{status}")
        self.detail = detail
        self.status = status
        self.request_id = request_id
        self.title = title
        self.retry_after = retry_after
        if self.code == IDENTITY_DENIED:
            self.exit_status = EX_NOPERM
        else:
            self.exit_status = EX_TEMPFAIL if status in _TRANSIENT_STATUSES else EX_FAILURE

    @property
    def denied(self) -> bool:
        """True when the issuer denies this machine's identity: no proof of it will do until an operator acts."""
        return self.code == IDENTITY_DENIED

    @property
    def refused(self) -> bool:
        """True for 401/403: the issuer does not accept these credentials (retrying the same proof is useless)."""
        return self.status in (401, 403)

    def one_line(self) -> str:
        """``<detail> (code <code>, HTTP <status>, request <request_id>)``."""
        request = self.request_id or "unknown"
        tail = ""
        if self.retry_after:
            # Retry-After is either delta-seconds or an HTTP date.
            unit = "s" if self.retry_after.isdigit() else ""
            tail = f", retry after {self.retry_after}{unit}"
        return f"{self.detail} (code {self.code}, HTTP {self.status}, request {request}{tail})"
