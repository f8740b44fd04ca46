"""DPS's one version string: the installed package's metadata (``pyproject.toml``'s
``version``), or, in a checkout that is not installed, the same field read from the file."""
from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def dps_version() -> str:
    if PYPROJECT.is_file():  # a checkout: its own pyproject, not whatever dps is installed
        with PYPROJECT.open("rb") as file:
            return tomllib.load(file)["project"]["version"]
    try:
        return version("dps")
    except PackageNotFoundError:
        return "unknown"


VERSION = dps_version()
