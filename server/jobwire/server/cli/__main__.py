"""`python -m jobwire.server.cli` runs the `jobwire` command."""

from __future__ import annotations

from jobwire.server.cli import main

main()
