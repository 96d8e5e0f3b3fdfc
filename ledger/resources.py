"""Where the shipped data files live: `schemas/` in a checkout, `ledger/_schemas` in a wheel."""

from __future__ import annotations

from pathlib import Path


def schemas_dir() -> Path:
    packaged = Path(__file__).parent / "_schemas"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "schemas"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("cannot find the ledger's schemas directory (broken installation?)")


def policies_dir() -> Path:
    return schemas_dir() / "policies"
