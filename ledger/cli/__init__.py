"""The `ledger` command line, by command group; `ledger.cli.main` assembles it.

Kept nearly empty on purpose: the plugins in `consumers/` and `infra/` import
`ledger.cli.common`, which must not load the plugins again while they are still being
imported; and the console script must reach `main` before the heavy imports.
"""

from __future__ import annotations

import sys

# Commands that run until told to stop, and exit 0 when they are.
SERVICES = ("consume",)


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in SERVICES:
        from ledger.cli import signals

        signals.hold()
    from ledger.cli.main import app

    app()
