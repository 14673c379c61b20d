"""The ``inforank`` command: a thin adapter over the library.

Each command is written once against :class:`retrieval.backend.Backend` and so runs on the
embedded/configured engines or, with ``INFORANK_URL`` set, against an ``inforank serve``; the
few that need the engines themselves (attach, validate, report, demo, serve) say so. Library
errors become one-line messages and exit codes in :func:`common.fail` alone. Heavy modules are
imported inside the commands, so ``inforank --help`` starts fast.
"""

from __future__ import annotations

from retrieval.cli import read, write  # noqa: F401  (registers the commands)
from retrieval.cli.common import app


def main() -> None:
    app()
