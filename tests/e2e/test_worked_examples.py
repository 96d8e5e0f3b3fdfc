"""Every worked example of docs/rules.md, end to end through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tests.factories import phone_change, relocation, signup, terms_accepted
from tests.support import Cli, eid, write_jsonl


def spans(cli: Cli, user: str) -> list[tuple[str, str | None, str, str, str]]:
    entries = cli.json("history", user)["entries"]
    return [
        (e["valid_from"], e["valid_to"], e["assignment"], e["policy"], e["rule"]) for e in entries
    ]


FIRST_EXAMPLE = [
    signup(1, "u-1001", at="2026-01-10T09:00:00Z", phone="+8613912345678"),
    phone_change(2, "u-1001", at="2026-02-01T00:00:00Z", phone="+16045550123"),
    terms_accepted(3, "u-1001", at="2026-04-01T00:00:00Z", version="tos-2026-03-residency"),
]


def test_cn_signup_then_foreign_phone_and_residency_terms(cli: Cli, tmp_path: Path) -> None:
    cli.run("replay", str(write_jsonl(tmp_path / "e.jsonl", FIRST_EXAMPLE)))
    assert spans(cli, "u-1001") == [
        (
            "2026-01-10T09:00:00Z",
            "2026-04-01T00:00:00Z",
            "xhs-domestic",
            "tos-2025-12-cutover",
            "C2",
        ),
        ("2026-04-01T00:00:00Z", None, "rednote-international", "tos-2026-03-residency", "R4"),
    ]
    before = cli.json("current", "u-1001", "--at", "2026-03-31T23:59:59Z")
    assert (before["assignment"], before["rule"]) == ("xhs-domestic", "C2")
    after = cli.json("current", "u-1001", "--at", "2026-04-01")
    assert (after["assignment"], after["rule"]) == ("rednote-international", "R4")
    assert after["evidence"] == [eid(3), eid(2)]  # binding terms event, then the phone change
    text = cli.run("explain", "u-1001", "--at", "2026-06-01").stdout
    assert "Since 1 April 2026 you are governed by the Rednote international rulebook" in text
    assert "(policy tos-2026-03-residency, rule R4)" in text


def test_ip_geolocation_is_travel_not_relocation(cli: Cli, tmp_path: Path) -> None:
    travel = relocation(
        4, "u-1001", at="2026-05-01T00:00:00Z", country="CN", evidence="ip_geolocation"
    )
    cli.run("replay", str(write_jsonl(tmp_path / "a.jsonl", FIRST_EXAMPLE)))
    without = spans(cli, "u-1001")
    cli.run("replay", str(write_jsonl(tmp_path / "b.jsonl", [travel])))
    assert spans(cli, "u-1001") == without
    assert len(cli.json("history", "u-1001", "--all")["entries"]) == len(without)


def test_tiktok_refugee_stays_domestic_under_cutover(cli: Cli, tmp_path: Path) -> None:
    events = [
        signup(10, "u-2", at="2025-01-15T12:00:00Z", phone="+12025550143", channel="rednote-app"),
        terms_accepted(11, "u-2", at="2025-12-20T00:00:00Z", version="tos-2025-12-cutover"),
    ]
    cli.run("replay", str(write_jsonl(tmp_path / "e.jsonl", events)))
    assert spans(cli, "u-2") == [
        ("2025-01-15T12:00:00Z", "2025-12-20T00:00:00Z", "xhs-domestic", "tos-2023-legacy", "L1"),
        ("2025-12-20T00:00:00Z", None, "xhs-domestic", "tos-2025-12-cutover", "C1"),
    ]


def test_hong_kong_number_is_international(cli: Cli, tmp_path: Path) -> None:
    events = [signup(20, "u-3", at="2026-01-05T08:00:00Z", phone="+85251234567")]
    cli.run("replay", str(write_jsonl(tmp_path / "e.jsonl", events)))
    assert spans(cli, "u-3") == [
        ("2026-01-05T08:00:00Z", None, "rednote-international", "tos-2025-12-cutover", "C3")
    ]


def test_invalid_number_is_undetermined(cli: Cli, tmp_path: Path) -> None:
    events = [signup(30, "u-4", at="2026-01-05T08:00:00Z", phone="+8612345")]
    cli.run("replay", str(write_jsonl(tmp_path / "e.jsonl", events)))
    assert spans(cli, "u-4") == [
        ("2026-01-05T08:00:00Z", None, "undetermined", "tos-2025-12-cutover", "C4")
    ]
    assert "review queue" in cli.run("explain", "u-4", "--at", "2026-02-01").stdout


def test_late_relocation_rewrites_valid_time_and_keeps_old_belief(cli: Cli, tmp_path: Path) -> None:
    """Relocated CN self_declared dated 2026-04-10 arriving after events dated 2026-05."""
    first = [
        signup(
            40,
            "u-5",
            at="2026-04-01T00:00:00Z",
            phone="+16045550123",
            recorded_at="2026-04-01T00:00:01Z",
        ),
        phone_change(
            41,
            "u-5",
            at="2026-05-02T00:00:00Z",
            phone="+447911123456",
            recorded_at="2026-05-02T00:00:01Z",
        ),
    ]
    late = [
        relocation(
            42,
            "u-5",
            at="2026-04-10T00:00:00Z",
            country="CN",
            evidence="self_declared",
            recorded_at="2026-05-20T00:00:00Z",
        ),
    ]
    cli.run("replay", str(write_jsonl(tmp_path / "first.jsonl", first)))
    believed_before = spans(cli, "u-5")
    assert believed_before == [
        ("2026-04-01T00:00:00Z", None, "rednote-international", "tos-2026-03-residency", "R4")
    ]
    cli.run("replay", str(write_jsonl(tmp_path / "late.jsonl", late)))
    assert spans(cli, "u-5") == [
        (
            "2026-04-01T00:00:00Z",
            "2026-04-10T00:00:00Z",
            "rednote-international",
            "tos-2026-03-residency",
            "R4",
        ),
        ("2026-04-10T00:00:00Z", None, "xhs-domestic", "tos-2026-03-residency", "R1"),
    ]
    # Record time: what the ledger believed before the late event arrived is still there.
    old = cli.json("history", "u-5", "--believed-at", "2026-05-10T00:00:00Z")["entries"]
    assert [(e["valid_from"], e["valid_to"], e["rule"]) for e in old] == [
        ("2026-04-01T00:00:00Z", None, "R4")
    ]
    superseded = [e for e in cli.json("history", "u-5", "--all")["entries"] if e["superseded_at"]]
    assert [(e["rule"], e["superseded_at"]) for e in superseded] == [("R4", "2026-05-20T00:00:00Z")]
    then = cli.json("current", "u-5", "--at", "2026-04-15", "--believed-at", "2026-05-10")
    now = cli.json("current", "u-5", "--at", "2026-04-15")
    assert (then["assignment"], now["assignment"]) == ("rednote-international", "xhs-domestic")
