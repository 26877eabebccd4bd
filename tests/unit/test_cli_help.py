"""Every ``issuer`` subcommand's ``--help`` ends with an example of itself, as the README promises."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from issuer.cli import build_parser


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Each runnable subcommand (a parser with no subcommands of its own) and its path from ``issuer``."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
        return
    for group in groups:
        for name, child in group.choices.items():
            yield from leaves(child, (*path, name))


LEAVES = list(leaves(build_parser()))


def test_the_tree_is_walked() -> None:
    names = {" ".join(path) for path, _ in LEAVES}
    assert {"serve", "migrate", "ca init", "ca retire-root", "certs stale", "instances reset", "revoke"} <= names
    assert len(names) >= 22


@pytest.mark.parametrize(("path", "parser"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_each_subcommand_help_has_an_example_of_itself(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    _, marker, examples = " ".join(text.split()).partition("example")
    assert marker, f"`issuer {' '.join(path)} --help` has no example:\n{text}"
    assert f"issuer {' '.join(path)}" in examples, f"the example does not run `issuer {' '.join(path)}`:\n{examples}"
