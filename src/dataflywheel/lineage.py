"""What a run records about where it came from: code, libraries, machine settings."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "numpy", "polars", "pyarrow", "scikit-learn", "safetensors", "sqlalchemy", "pydantic")


@functools.cache
def code_version() -> str:
    """Package version, plus the git commit when running from a checkout."""
    from dataflywheel import __version__

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__}+g{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def environment() -> dict[str, Any]:
    return {"code_version": code_version(), "libraries": library_versions(), "platform": platform.platform()}
