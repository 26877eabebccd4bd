"""The authorizer's deployment zip: its build script as a module, and the Python it is built for.

``deploy/authorizer/build_zip.py`` is a script, not a package module: :func:`build_zip` loads it so
tests read its constants (``LAMBDA_PYTHON``, ``PLATFORMS``, ``zip_name``) instead of repeating them.
:func:`lambda_python` finds an interpreter of the Lambda runtime's Python on this machine, so the
zip's handler runs on the version whose native code (cffi's extension) the zip carries.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

__all__ = ["BUILD", "build_zip", "lambda_python", "require_lambda_python"]

BUILD = Path(__file__).resolve().parents[2] / "deploy" / "authorizer" / "build_zip.py"


def build_zip() -> ModuleType:
    """``deploy/authorizer/build_zip.py`` as a module (loaded once)."""
    loaded = sys.modules.get("authorizer_build_zip")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("authorizer_build_zip", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def lambda_python(version: str) -> str | None:
    """The path of a working ``python<version>`` here, or None.

    Tried in order: ``python<version>`` on PATH, then pyenv's installs (``$PYENV_ROOT``,
    ``~/.pyenv``), then /usr/local/bin and /usr/bin. Each candidate is run once: a pyenv shim on
    PATH exists even when that version is not selected, and then fails.
    """
    name = f"python{version}"
    candidates = [shutil.which(name)]
    for root in (os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")):
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", name)), reverse=True)
    candidates += [f"/usr/local/bin/{name}", f"/usr/bin/{name}"]
    for candidate in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


def require_lambda_python(version: str) -> str:
    """:func:`lambda_python`, or skip the test loudly — fail it when ``CI`` is set."""
    found = lambda_python(version)
    if found is not None:
        return found
    why = (
        f"no python{version} here (PATH, pyenv, /usr/local/bin, /usr/bin): the authorizer zip targets Lambda's "
        f"python{version} and its native code only loads there (pyenv install {version})"
    )
    if os.environ.get("CI"):
        pytest.fail(why, pytrace=False)
    pytest.skip(f"SKIPPING: {why}")
