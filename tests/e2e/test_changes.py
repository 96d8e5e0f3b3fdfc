"""`ledger changes`, the changefeed without Kafka, on SQLite and PostgreSQL: after a replay
of a generated stream it prints one record per history row (the decision log's rows, by
decision_id and content), in strictly increasing seq, and paging with --after/--limit (or
the command's own paging) covers the feed with no gap and no duplicate. The HTTP API's
`/v1/changes` is held to the same records in tests/e2e/test_http_api.py."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from ledger.cli import changes as changes_command
from ledger.queries.changes import MAX_PAGE
from ledger.store.schema import assignment_history
from tests.factories import PHONE_CA, PHONE_UK, phone_change, relocation, signup
from tests.helpers import postgres
from tests.support import Cli, write_jsonl

# The fields a record shares with its row of `ledger decisions export`.
SHARED = (
    "user_id",
    "valid_from",
    "valid_to",
    "recorded_at",
    "assignment",
    "policy",
    "policy_hash",
    "rule",
    "reason",
)


def lines(result: Any) -> list[dict[str, Any]]:
    """The JSON Lines a command printed, each line one object."""
    text = result.stdout
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def feed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """A generated stream replayed in many small transactions, with the feed and the
    decision log as the CLI prints them."""
    tmp = tmp_path_factory.mktemp(f"changes-{request.param}")
    with contextlib.ExitStack() as databases:
        if request.param == "sqlite":
            db = f"sqlite:///{tmp / 'ledger.db'}"
        else:
            request.getfixturevalue("postgres_available")
            db = databases.enter_context(postgres.fresh_database())
        cli = Cli(db)
        stream = tmp / "generated.jsonl"
        cli.run("generate", "--users", "300", "--seed", "5", "-o", str(stream), db=False)
        # A first load whose decisions are to be published (an empty store's replay is
        # otherwise a rebuild, recorded unannounced).
        cli.run("replay", str(stream), "--batch-size", "100", "--announce")
        records = lines(cli.run("changes"))
        decisions = lines(cli.run("decisions", "export", "-o", "-"))
        yield SimpleNamespace(db=db, cli=cli, records=records, decisions=decisions)


def test_one_record_per_history_row(feed: SimpleNamespace) -> None:
    records, decisions = feed.records, feed.decisions
    engine = sa.create_engine(feed.db)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(assignment_history)).scalar()
    engine.dispose()
    assert len(records) == len(decisions) == rows > 300
    ids = [r["decision_id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == sorted(d["decision_id"] for d in decisions)
    # Each record is its history row with its decision, as the decision log has it.
    logged = {d["decision_id"]: d for d in decisions}
    for record in records:
        row = logged[record["decision_id"]]
        assert {k: record[k] for k in SHARED} == {k: row[k] for k in SHARED}
        assert record["kind"] in ("assigned", "corrected") and record["announced"] is True
        assert set(record["terms"]) == {"age_rule", "content_focus", "data_residency"}
    # Every user the stream signed up has a decision in the feed.
    assert len({r["user_id"] for r in records}) == 300


def test_seq_increases_in_the_order_the_decisions_were_made(feed: SimpleNamespace) -> None:
    seqs = [r["seq"] for r in feed.records]
    assert all(a < b for a, b in itertools.pairwise(seqs)) and seqs[0] >= 1
    # In the order the events that made them were applied (one event may make several).
    app_seqs = [r["app_seq"] for r in feed.records]
    assert None not in app_seqs
    assert all(a <= b for a, b in itertools.pairwise(app_seqs))


def _paged(cli: Cli, limit: int, *, as_json: bool) -> list[dict[str, Any]]:
    """The whole feed, a page of `limit` at a time, each page asked after the last."""
    got: list[dict[str, Any]] = []
    after = 0
    while True:
        args = ("changes", "--after", str(after), "--limit", str(limit))
        if as_json:
            doc = cli.json(*args)
            page, next_after = doc["changes"], doc["next_after"]
            assert set(doc) == {"changes", "next_after"}
        else:
            page = lines(cli.run(*args))
            next_after = page[-1]["seq"] if page else after
        assert len(page) <= limit
        assert all(r["seq"] > after for r in page)
        got.extend(page)
        if not page:
            assert next_after == after  # nothing newer: ask again from the same place
            return got
        assert next_after == page[-1]["seq"]
        after = next_after


@pytest.mark.parametrize(("limit", "as_json"), [(37, False), (100, True), (MAX_PAGE, True)])
def test_paging_covers_the_feed_without_gaps_or_duplicates(
    feed: SimpleNamespace, limit: int, as_json: bool
) -> None:
    assert _paged(feed.cli, limit, as_json=as_json) == feed.records


def test_after_starts_past_any_seq(feed: SimpleNamespace) -> None:
    records, cli = feed.records, feed.cli
    for k in (0, 1, len(records) // 2, len(records) - 1):
        seq = records[k]["seq"]
        assert lines(cli.run("changes", "--after", str(seq))) == records[k + 1 :]
        # Between two seqs (they may skip numbers): the same as after the lower one.
        assert (
            lines(cli.run("changes", "--after", str(seq), "--limit", "1")) == records[k + 1 : k + 2]
        )
    last = records[-1]["seq"]
    assert cli.run("changes", "--after", str(last)).stdout == ""
    beyond = str(2**63 - 1)
    assert cli.json("changes", "--after", beyond) == {"changes": [], "next_after": 2**63 - 1}
    assert cli.json("changes") == {"changes": records, "next_after": last}
    assert lines(cli.run("changes", "--limit", "1")) == records[:1]


def test_without_limit_the_command_pages_through_the_whole_feed(
    feed: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command reads MAX_PAGE records a query; a smaller page shows that it goes on
    until a page comes back short, wherever the pages end."""
    for page in (1, 7, len(feed.records), len(feed.records) + 1):
        monkeypatch.setattr(changes_command, "PAGE", page)
        assert lines(feed.cli.run("changes")) == feed.records, page
        assert feed.cli.json("changes")["changes"] == feed.records, page


def test_new_decisions_follow_the_last_seq(cli: Cli, tmp_path: Path) -> None:
    """A reader that keeps the last seq gets exactly what later batches decided: here a
    late event's correction of a period the ledger had already decided."""
    first_events = [
        signup(
            1,
            "u-1",
            at="2026-04-01T00:00:00Z",
            phone=PHONE_CA,
            channel="rednote-app",
            recorded_at="2026-04-01T00:00:01Z",
        ),
        phone_change(
            2, "u-1", at="2026-05-02T00:00:00Z", phone=PHONE_UK, recorded_at="2026-05-02T00:00:01Z"
        ),
        signup(3, "u-2", at="2026-04-02T00:00:00Z", recorded_at="2026-04-02T00:00:01Z"),
    ]
    cli.run("replay", str(write_jsonl(tmp_path / "first.jsonl", first_events)))
    first = lines(cli.run("changes"))
    assert {r["kind"] for r in first} == {"assigned"}
    assert {r["user_id"] for r in first} == {"u-1", "u-2"}
    last = first[-1]["seq"]
    assert cli.json("changes", "--after", str(last)) == {"changes": [], "next_after": last}
    late = relocation(4, "u-1", at="2026-04-10T00:00:00Z", recorded_at="2026-05-20T00:00:00Z")
    cli.run("replay", str(write_jsonl(tmp_path / "late.jsonl", [late])))
    new = lines(cli.run("changes", "--after", str(last)))
    assert new and all(r["seq"] > last and r["user_id"] == "u-1" for r in new)
    assert {r["recorded_at"] for r in new} == {"2026-05-20T00:00:00Z"}
    assert "corrected" in {r["kind"] for r in new}
    assert lines(cli.run("changes")) == first + new
