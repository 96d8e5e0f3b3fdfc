"""A small run of the benchmark suite, so it never rots: `ledger bench --quick` (300 users,
one repetition, no quixstreams, consumer groups of 1 and 2 members) against the real broker
and databases."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.kafka import LEDGER

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_quick_bench_measures_every_contender(tmp_path: Path, postgres_available: bool) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [LEDGER, "bench", "--quick", "--work", str(tmp_path / "work"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ratios against the baselines" in done.stdout
    report = json.loads(out.read_text())
    rates = {c["contender"]: c["events_per_second"] for c in report["contenders"]}
    expected = {
        "fastavro decode-only",
        "kafka-python consume+decode",
        "ledger replay -> sqlite",
        "ledger consume -> sqlite",
        "ledger replay -> postgresql",
        "ledger replay -> sqlite, 2 workers",
        "ledger replay -> postgresql, 2 workers",
        "ledger consume -> postgresql",
        "ledger consume -> postgresql, 1 member",
        "ledger consume -> postgresql, 2 members",
    }
    assert expected <= set(rates)
    assert all(rate > 0 for rate in rates.values()), rates
    assert {r["contender"] for r in report["ratios"]} >= {
        "ledger replay -> sqlite",
        "ledger replay -> sqlite, 2 workers",
    }
    assert all(r["ratio"] and r["ratio"] > 0 for r in report["ratios"])
    assert report["events"] > 1000 and report["store_bytes_per_event_sqlite"] > 0
    assert report["store_bytes_per_event_postgresql"] > 0
    assert 0 < report["history_in_process_ms"]["p50"] <= report["history_in_process_ms"]["p99"]
    assert "consumer-group members on PostgreSQL" in done.stdout
    scaling = {row["members"]: row for row in report["member_scaling"]["rows"]}
    assert set(scaling) == {1, 2}
    assert scaling[1]["vs_1_member"] == 1.0
    for row in scaling.values():
        assert row["events_per_second"] == rates[row["contender"]] > 0
        assert row["vs_1_member"] > 0 and row["join_seconds"] >= 0
        # Only what was applied once every member held partitions is timed.
        assert 0 < row["events_timed"] <= report["events"]
