"""`ledger impact`: the what-if over a real store (SQLite and PostgreSQL), checked against
recomputations that do not use the ledger's fold."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import phonenumbers
import pytest
import sqlalchemy as sa

from ledger.domain.time import parse_instant
from ledger.resources import policies_dir
from ledger.store.schema import HISTORY_FROM, assignment_history, history_columns, users
from tests.support import Cli, history_rows

AT = "2026-11-01"
NOT_SIGNED_UP = "not signed up"

DRAFT_2027 = """
version = "tos-2027-01-review"
effective_from = "2027-01-01T00:00:00Z"

[[rules]]
id = "V1"
when = []
assign = "undetermined"
reason = "everyone is reviewed again under the 2027 terms"
"""


@pytest.fixture
def events(cli: Cli, tmp_path: Path) -> Path:
    """A generated store of 150 users in `cli.db`; returns the event file."""
    path = tmp_path / "events.jsonl"
    cli.run("generate", "--users", "150", "--seed", "11", "-o", str(path), db=False)
    cli.run("replay", str(path), expect=None)
    return path


def matrix(report: dict) -> dict[tuple[str, str], int]:
    return {(m["from"], m["to"]): m["users"] for m in report["matrix"]}


def believed_at(url: str, at: datetime) -> dict[str, str]:
    """user -> assignment believed at `at`, straight from the table."""
    h = assignment_history.c
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        everyone = {u: NOT_SIGNED_UP for u in conn.execute(sa.select(users.c.user_id)).scalars()}
        q = sa.select(*history_columns("user_id", "assignment")).select_from(HISTORY_FROM)
        q = q.where(
            h.superseded_at.is_(None),
            h.valid_from <= at,
            sa.or_(h.valid_to.is_(None), h.valid_to > at),
        )
        everyone.update({u: a for u, a in conn.execute(q)})
    engine.dispose()
    return everyone


def wechat_by_hand(path: Path, at: datetime) -> dict[str, str]:
    """user -> what the registration phone alone says at `at` (docs/rules.md, wechat-style),
    read from the raw event file with phonenumbers, without the ledger's code."""
    signups: dict[str, tuple[datetime, str, str]] = {}
    for line in path.read_text().splitlines():
        e = json.loads(line)
        if e["type"] != "SignedUp":
            continue
        key = (parse_instant(e["occurred_at"]), e["event_id"], e["phone"])
        if e["user_id"] not in signups or key < signups[e["user_id"]]:
            signups[e["user_id"]] = key
    out: dict[str, str] = {}
    for user, (signed_up, _, phone) in signups.items():
        if signed_up > at:
            out[user] = NOT_SIGNED_UP
            continue
        try:
            number = phonenumbers.parse(phone, None)
            valid = phonenumbers.is_valid_number(number)
            region = phonenumbers.region_code_for_number(number)
        except phonenumbers.NumberParseException:
            valid, region = False, None
        if not valid:
            out[user] = "undetermined"
        else:
            out[user] = "xhs-domestic" if region == "CN" else "rednote-international"
    return out


def test_shipped_policies_as_candidate_move_nobody(cli: Cli, events: Path) -> None:
    before = history_rows(cli.db)
    for extra in ([], ["--policies", str(policies_dir())]):
        report = cli.json("impact", "--at", AT, *extra)
        assert report["users"] == 150
        assert report["moved"] == 0 and report["reason_changed"] == 0
        assert all(m["from"] == m["to"] for m in report["matrix"])
        assert all(r["from"] == r["to"] for r in report["rules"])
    assert history_rows(cli.db) == before  # read-only


@pytest.mark.parametrize("at", ["2026-11-01", "2025-06-01"])
def test_only_wechat_style_equals_a_recomputation_by_hand(cli: Cli, events: Path, at: str) -> None:
    when = parse_instant(at, date_means_midnight_utc=True)
    report = cli.json("impact", "--only", "wechat-style", "--at", at)
    current, candidate = believed_at(cli.db, when), wechat_by_hand(events, when)
    assert set(current) == set(candidate)
    expected = Counter((current[u], candidate[u]) for u in current)
    assert matrix(report) == dict(expected)
    assert report["moved"] == sum(n for (a, b), n in expected.items() if a != b)
    moved_samples = [u for m in report["matrix"] if m["from"] != m["to"] for u in m["samples"]]
    assert all(current[u] != candidate[u] for u in moved_samples)
    assert {r["to"]["policy"] for r in report["rules"] if r["to"]} == {"wechat-style"}


def test_accepting_terms_not_yet_effective_moves_nobody(
    cli: Cli, events: Path, tmp_path: Path
) -> None:
    draft = tmp_path / "draft.toml"
    draft.write_text(DRAFT_2027)
    args = ("impact", "--policies", str(draft), "--accept", "tos-2027-01-review")
    early = cli.json(*args, "--at", AT)
    assert early["moved"] == 0 and early["reason_changed"] == 0
    # The control: once the terms are effective, everyone accepting them is reviewed.
    late = cli.json(*args, "--at", "2027-02-01")
    assert late["moved"] > 0
    assert {m["to"] for m in late["matrix"]} == {"undetermined"}
    assert late["moved"] + matrix(late).get(("undetermined", "undetermined"), 0) == 150


def test_explain_shows_both_histories_and_reasons(cli: Cli, events: Path) -> None:
    report = cli.json("impact", "--only", "wechat-style", "--at", AT)
    user = next(m["samples"][0] for m in report["matrix"] if m["from"] != m["to"])
    ex = cli.json("impact", "--only", "wechat-style", "--at", AT, "--explain", user)
    assert ex["user_id"] == user
    assert ex["at_current"]["assignment"] != ex["at_candidate"]["assignment"]
    assert ex["at_candidate"]["policy"] == "wechat-style" and ex["at_candidate"]["reason"]
    assert ex["at_current"]["reason"]
    assert any(s["moved"] for s in ex["segments"])
    assert ex["segments"][0]["valid_from"] == ex["current"][0]["valid_from"]
    text = cli.run("impact", "--only", "wechat-style", "--at", AT, "--explain", user).stdout
    assert "current at" in text and "candidate at" in text and "moves" in text


def test_a_missing_store_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "absent.db"
    result = Cli(f"sqlite:///{missing}").run("impact", expect=1)
    assert "no ledger database" in result.stderr
    assert not missing.exists()
