"""The writer's user cache is bounded by (estimated) memory, and what it evicts changes
nothing but speed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ledger.app.ingest.projector import Projector
from ledger.app.ingest.user_cache import cached_bytes
from ledger.codecs.policy_files import load_policies
from ledger.generate import generate_events, write_events
from ledger.sources.files import read_records, source_key
from ledger.store.memory import MemoryStore

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _replay(path: Path, cache_bytes: int) -> tuple[MemoryStore, list[int]]:
    store = MemoryStore()
    projector = Projector(store, load_policies(), b"k", cache_bytes=cache_bytes)
    records = [r for r, _ in read_records(path, source_key(path))]
    batches = [records[i : i + 50] for i in range(0, len(records), 50)]
    held = []
    for _ in projector.apply_batches(batches, NOW):
        held.append(projector.cache.bytes)
        assert projector.cache.bytes == sum(cached_bytes(p) for p in projector.cache.values())
    return store, held


def test_the_cache_stays_within_its_bytes_and_eviction_changes_no_result(tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    write_events(path, generate_events(300, seed=21))
    roomy, roomy_held = _replay(path, 1 << 30)
    tight, tight_held = _replay(path, 20_000)
    assert max(tight_held) <= 20_000 < max(roomy_held)
    assert sorted(tight.history_rows(), key=repr) == sorted(roomy.history_rows(), key=repr)
