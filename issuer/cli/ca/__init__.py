"""``issuer ca …``: the private CA and its issuer registry.

``init`` and ``show`` (:mod:`.init`, with KMS keys in :mod:`.kms`); ``rotate``, ``activate``,
``retire`` and ``status`` (:mod:`.rotation`, :mod:`.status`, publishing in :mod:`.publish`);
``add-root`` and ``retire-root`` (:mod:`.roots`); ``root-crl`` (:mod:`.root_crl`).
"""

from __future__ import annotations

from typing import Any

from issuer.cli.ca import init, root_crl, roots, rotation

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``issuer ca`` and its actions."""
    ca = sub.add_parser("ca", help="the private CA").add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    init.add_parsers(ca)
    rotation.add_parsers(ca)
    roots.add_parsers(ca)
    root_crl.add_parsers(ca)
