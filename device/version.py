"""The installed crowdcap version (`crowdcap --version`, the console's `version`, `status 2`)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("crowdcap")
    except PackageNotFoundError:
        return "0+unknown"
