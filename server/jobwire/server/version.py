"""jobwire's version, read from the installed distribution (pyproject.toml is the one place it is
written). The worker SDK keeps its own copy in jobwire.worker._version: it may not import the server."""

from __future__ import annotations

from importlib import metadata


def jobwire_version() -> str:
    try:
        return metadata.version("jobwire")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
