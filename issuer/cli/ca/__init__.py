"""``issuer ca …``: the private CA and its issuer registry.

``init`` and ``show`` (:mod:`.init`, with KMS keys in :mod:`.kms`); ``rotate``, ``activate``,
``retire``, ``status``, ``add-root`` and ``retire-root`` (:mod:`.rotation`, :mod:`.status`,
publishing in :mod:`.publish`); ``root-crl`` (:mod:`.root_crl`).
"""

from __future__ import annotations

from typing import Any

from issuer.cli.ca import init, root_crl, rotation

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``issuer ca`` and its actions."""
    ca = sub.add_parser("ca", help="the private CA").add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    init.add_parsers(ca)
    rotation.add_parsers(ca)
    root_crl.add_parsers(ca)
