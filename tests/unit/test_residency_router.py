"""The residency table of examples/residency_router.py without a broker: decisions in any
order and with any number of copies give the same table and moves; and the example stays
copyable, importing nothing of the project (tests/integration/test_residency_router.py
runs it against the real broker)."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.unit.test_layering import imports

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "residency_router.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("residency_router", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


router = load()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def decision(
    seq: int,
    assignment: str,
    *,
    user: str = "u-1",
    open_ended: bool = True,
    kind: str = "assigned",
    decision_id: str | None = None,
) -> dict[str, Any]:
    return {
        "decision_id": decision_id or f"d{seq}",
        "seq": seq,
        "user_id": user,
        "kind": kind,
        "valid_from": T0,
        "valid_to": None if open_ended else T0,
        "assignment": assignment,
        "rule": f"R{seq}",
    }


def fold(decisions: list[dict[str, Any]]) -> tuple[Any, list[tuple[Any, Any, int]]]:
    table = router.ResidencyTable()
    moves = [table.apply(d) for d in decisions]
    return table, [(m.before, m.after, m.seq) for m in moves if m is not None]


def test_moves_follow_the_open_ended_decisions_and_skip_closed_periods() -> None:
    table, moves = fold(
        [
            decision(1, "undetermined"),
            decision(2, "xhs-domestic"),
            decision(3, "xhs-domestic", open_ended=False),  # history: no move
            decision(4, "xhs-domestic"),  # same residency: no move
            decision(5, "rednote-international"),
        ]
    )
    assert moves == [
        (None, "none", 1),
        ("none", "mainland-china", 2),
        ("mainland-china", "singapore", 5),
    ]
    assert table.to_json()["u-1"]["seq"] == 5
    assert table.counts() == {"mainland-china": 0, "singapore": 1, "none": 0}


def test_copies_and_late_older_decisions_change_nothing() -> None:
    stream = [decision(1, "xhs-domestic"), decision(2, "rednote-international")]
    want_table, want_moves = fold(stream)
    table, moves = fold([*stream, stream[0], *stream, stream[1]])
    assert (table.to_json(), moves) == (want_table.to_json(), want_moves)
    assert (table.records, table.duplicates) == (6, 4)
    # The newer decision first, the older one late: the newer one stays.
    table, moves = fold([stream[1], stream[0]])
    assert table.to_json() == want_table.to_json()
    assert moves == [(None, "singapore", 2)]


def test_an_erased_user_leaves_the_table_for_good() -> None:
    erased = decision(3, "undetermined", kind="erased", decision_id="d2")
    table, moves = fold([decision(1, "xhs-domestic"), erased, decision(1, "xhs-domestic")])
    assert table.to_json() == {}
    assert moves == [(None, "mainland-china", 1), ("mainland-china", None, 3)]


def test_a_rulebook_newer_than_the_example_is_routed_as_unknown() -> None:
    table, moves = fold([decision(1, "some-future-rulebook")])
    assert moves == [(None, "unknown", 1)]
    assert table.counts()["unknown"] == 1


def test_the_example_imports_nothing_of_the_project() -> None:
    tops = {name.split(".")[0] for name in imports(EXAMPLE)}
    assert not tops & {"ledger", "consumers", "infra", "tests", "tools"}
    assert tops - set(sys.stdlib_module_names) == {"fastavro", "kafka"}
