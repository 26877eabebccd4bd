"""Settings remembered beside the certificate, so that ``renew --out DIR`` and ``run --out DIR`` need nothing else.

What ``bootstrap`` (and every later issuance) was given on its command line is written into
``issuer.json`` with the certificate (see :mod:`clients.agent.state`): the CA bundle, the
renewal mode, the on-change command, the method's options (token *file*, IMDS endpoint, STS
region and host, AWS profile). Secrets never are: an inline ``--token`` or ``ISSUER_JOIN_TOKEN``
is not written anywhere.

Precedence, for every setting: the command line, else what ``issuer.json`` remembers, else the
built-in default. The settings an issuance used are remembered for the next one, so a flag given
once to ``renew`` (say a new ``--ca-bundle``) sticks once that renewal succeeded. ``--on-change ''``
forgets a remembered command.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from clients.wire import AUTH_MODES, KEY_TYPES, AuthMode, KeyType


class Recorded(Protocol):
    """What :func:`resolve` reads of the agent's state file (``clients.agent.state.AgentState``)."""

    @property
    def server(self) -> str: ...

    @property
    def method(self) -> str | None: ...

    @property
    def role(self) -> str | None: ...

    @property
    def settings(self) -> Remembered: ...


__all__ = ["DEFAULTS", "METHOD_OPTIONS", "Remembered", "parse_remembered", "resolve"]


@dataclass(frozen=True)
class Remembered:
    """Options of the command line worth keeping; None: not given (the built-in default applies)."""

    ca_bundle: str | None = None  # absolute path
    insecure_http: bool | None = None
    timeout: float | None = None
    auth: AuthMode | None = None
    on_change: str | None = None
    on_change_timeout: float | None = None
    key_type: KeyType | None = None
    common_name: str | None = None
    token_file: str | None = None  # absolute path; never the token itself
    imds_endpoint: str | None = None
    imds_max_wait: float | None = None
    sts_region: str | None = None
    sts_endpoint_host: str | None = None
    profile: str | None = None
    external_cert: str | None = None  # absolute path (x509pop)
    external_key: str | None = None  # absolute path (x509pop); never the key itself

    def to_json(self) -> dict[str, object]:
        """The fields that are set, for ``issuer.json``."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Remembered))
_PATHS: Final = frozenset({"ca_bundle", "token_file", "external_cert", "external_key"})
_NUMBERS: Final = frozenset({"timeout", "on_change_timeout", "imds_max_wait"})
_CHOICES: Final[Mapping[str, tuple[str, ...]]] = {"auth": AUTH_MODES, "key_type": KEY_TYPES}
# The state's own fields that a command line may also give.
_IDENTITY: Final = ("server", "method", "role")

# The options of one attestation method: a remembered one is dropped when another method is used.
METHOD_OPTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "token": ("token", "token_file"),
    "aws-ec2": ("imds_endpoint", "imds_max_wait"),
    "aws-ec2-role": ("imds_endpoint", "imds_max_wait", "sts_region", "sts_endpoint_host"),
    "aws-iam": ("sts_region", "sts_endpoint_host", "profile"),
    "x509pop": ("external_cert", "external_key"),
}

DEFAULTS: Final[Mapping[str, object]] = {
    "timeout": 30.0,
    "on_change_timeout": 30.0,
    "imds_max_wait": 120.0,
    "auth": "token",
    "insecure_http": False,
}


def parse_remembered(document: object) -> Remembered:
    """Read the ``settings`` object of ``issuer.json``; unknown keys are ignored (a newer agent's).
    Raise ``ValueError`` saying which value is unusable."""
    if document is None:
        return Remembered()
    if not isinstance(document, dict):
        raise ValueError("'settings' is not a JSON object")
    values: dict[str, object] = {}
    for name in _FIELDS:
        value = document.get(name)
        if value is None:
            continue
        if name == "insecure_http":
            ok = isinstance(value, bool)
        elif name in _NUMBERS:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str) and bool(value) and value in _CHOICES.get(name, (value,))
        if not ok:
            raise ValueError(f"settings.{name} is not usable: {value!r}")
        values[name] = value
    return Remembered(**values)  # type: ignore[arg-type]


def resolve(args: argparse.Namespace, state: Recorded | None) -> tuple[argparse.Namespace, Remembered]:
    """Fill what ``args`` leaves out from ``state`` and the built-in defaults.

    Returns the options to run with (paths as :class:`Path`) and the settings to remember
    for the next issuance: the explicit ones over the remembered ones, without built-in
    defaults (so a later version's better default is not hidden behind an old copy).
    """
    previous = state.settings if state is not None else Remembered()
    merged = dict(vars(args))
    kept: dict[str, object] = {}
    for name in _FIELDS:
        explicit = merged.get(name)
        if name == "on_change" and explicit == "":
            value: object = None  # --on-change '': forget the remembered command
        elif explicit is not None:
            value = str(Path(explicit).absolute()) if name in _PATHS else explicit
        else:
            value = getattr(previous, name)
        kept[name] = value
        if name in merged:
            merged[name] = Path(value) if name in _PATHS and isinstance(value, str) else value
    if state is not None:
        for name in _IDENTITY:
            if name in merged and merged[name] is None:
                merged[name] = getattr(state, name)
    method = merged.get("method") or (state.method if state else None)
    for other, names in METHOD_OPTIONS.items():
        for name in names:
            if (
                method is not None
                and other != method
                and name not in METHOD_OPTIONS.get(method, ())
                and getattr(args, name, None) is None
            ):
                kept.pop(name, None)
                if name in merged:
                    merged[name] = None
    for name, default in DEFAULTS.items():
        if name in merged and merged[name] is None:
            merged[name] = default
    return argparse.Namespace(**merged), Remembered(**kept)  # type: ignore[arg-type]
