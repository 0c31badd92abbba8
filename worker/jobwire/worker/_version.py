"""The SDK's version, as sent in Hello."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("jobwire")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
