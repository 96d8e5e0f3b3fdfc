"""Subject exports (docs/privacy.md), on SQLite and the real PostgreSQL: an export verifies
with no store; each tampering fails with the check that caught it; --digest proves against
a recorded digest and refuses one the store did not record or that does not cover the
user."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.app.audit.signing import sign
from ledger.domain.audit.digest import Digest
from ledger.generate import generate_events, write_events
from tests.support import Cli

KEY = "subject-export-audit-key"
USER = "u-000007"
OTHER = "u-000012"


@pytest.fixture
def store(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("LEDGER_AUDIT_KEY", KEY)
    cli = Cli(db_url)
    path = tmp_path / "events.jsonl"
    write_events(path, generate_events(40, 3))
    cli.run("replay", str(path))
    return cli


def export(cli: Cli, tmp: Path, user: str = USER, *extra: str) -> dict[str, Any]:
    out = tmp / f"{user}.json"
    cli.run("subject", "export", user, "-o", str(out), *extra)
    return json.loads(out.read_text())


def verify(cli: Cli, doc: dict[str, Any], tmp: Path, *extra: str, expect: int) -> dict[str, Any]:
    path = tmp / "check.json"
    path.write_text(json.dumps(doc))
    result = cli.run("subject", "verify", str(path), "--json", *extra, expect=expect, db=False)
    report = json.loads(result.stdout)
    if expect:
        assert result.stderr.count("\n") == 1 and "does not verify" in result.stderr
    return report


def failed(report: dict[str, Any]) -> list[str]:
    return [c["check"] for c in report["checks"] if not c["ok"]]


def test_an_export_verifies_and_says_each_check(store: Cli, tmp_path: Path) -> None:
    doc = export(store, tmp_path)
    report = verify(store, doc, tmp_path, expect=0)
    assert [c["check"] for c in report["checks"]] == [
        "format",
        "chain",
        "audit_path",
        "signature",
        "history",
    ]
    assert report["ok"] and failed(report) == []
    assert doc["format"] == "ledger-subject-export/1" and doc["user_id"] == USER
    assert [e["seq"] for e in doc["events"]] == list(range(1, len(doc["events"]) + 1))
    assert doc["proof"]["length"] == len(doc["events"]) == len(doc["proof"]["links"])
    assert doc["proof"]["digest"]["signature"]["alg"] == "HMAC-SHA256"
    believed = [h for h in doc["history"] if h["superseded_at"] is None]
    assert len(doc["explanation"]) == len(believed) >= 1
    assert all(x["statement"] and x["rulebook"]["data_residency"] for x in doc["explanation"])
    assert set(doc["policies"]) == {h["policy"] for h in doc["history"]}
    # Never a raw phone number: only regions, validity and keyed hashes.
    assert "+86" not in json.dumps(doc) and "+1" not in json.dumps(doc)
    # The human form: one line per check.
    path = tmp_path / "e.json"
    path.write_text(json.dumps(doc))
    lines = store.run("subject", "verify", str(path), db=False).stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["pass"] * 5


def test_a_second_export_reuses_the_recorded_digest_and_digest_file_selects_one(
    store: Cli, tmp_path: Path
) -> None:
    first = export(store, tmp_path)
    summary = store.json("subject", "export", OTHER, "-o", str(tmp_path / "o.json"))
    assert summary["fresh_digest"] is False
    assert summary["digest_id"] == first["proof"]["digest_id"]
    # A newer digest, then an export against the older one given as a file.
    digest_file = tmp_path / "old.json"
    digest_file.write_text(json.dumps(first["proof"]["digest"], indent=2))
    store.run("digest", "-o", str(tmp_path / "newer.json"))
    again = export(store, tmp_path, USER, "--digest", str(digest_file))
    assert again["proof"]["digest_id"] == first["proof"]["digest_id"]
    assert verify(store, again, tmp_path, expect=0)["ok"]


def test_digest_files_the_store_did_not_record_or_that_do_not_cover_are_refused(
    store: Cli, tmp_path: Path
) -> None:
    doc = export(store, tmp_path)
    edited = dict(doc["proof"]["digest"], root="0" * 64)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edited))
    out = tmp_path / "x.json"
    result = store.run("subject", "export", USER, "-o", str(out), "--digest", str(bad), expect=1)
    assert "did not record" in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()
    # The user's newer events are not covered by the digest the first export used.
    more = tmp_path / "more.jsonl"
    write_events(more, generate_events(40, 11))
    store.run("replay", str(more))
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc["proof"]["digest"]))
    result = store.run("subject", "export", USER, "-o", str(out), "--digest", str(old), expect=1)
    assert "does not cover" in result.stderr or "covers events up to" in result.stderr
    assert result.stderr.count("\n") == 1
    # Without --digest, a fresh digest is taken for the newer events.
    summary = store.json("subject", "export", USER, "-o", str(out))
    assert summary["fresh_digest"] is True
    assert verify(store, json.loads(out.read_text()), tmp_path, expect=0)["ok"]


def test_an_unknown_user_is_one_line(store: Cli, tmp_path: Path) -> None:
    result = store.run("subject", "export", "u-nobody", "-o", str(tmp_path / "x.json"), expect=1)
    assert "unknown user" in result.stderr and result.stderr.count("\n") == 1


def _edit_assignment(doc: dict[str, Any]) -> None:
    h = doc["history"][0]
    h["assignment"] = (
        "rednote-international" if h["assignment"] != "rednote-international" else "xhs-domestic"
    )


def _drop_middle_event(doc: dict[str, Any]) -> None:
    del doc["events"][1]
    del doc["proof"]["links"][1]


def _drop_last_event(doc: dict[str, Any]) -> None:
    # Consistently: the links, head and length shortened too.
    doc["events"].pop()
    doc["proof"]["links"].pop()
    doc["proof"]["head"] = doc["proof"]["links"][-1]
    doc["proof"]["length"] -= 1
    doc["proof"]["leaf"].update(head=doc["proof"]["head"], length=doc["proof"]["length"])


def _flip_sibling(doc: dict[str, Any]) -> None:
    s = doc["proof"]["siblings"][0]
    doc["proof"]["siblings"][0] = ("0" if s[0] != "0" else "1") + s[1:]


def _edit_payload(doc: dict[str, Any]) -> None:
    ev = doc["events"][0]
    ev["phone_region"] = "US" if ev["phone_region"] != "US" else "CN"


def _resign_hmac(doc: dict[str, Any]) -> None:
    digest = Digest.from_json(doc["proof"]["digest"])
    doc["proof"]["digest"] = sign(digest, hmac_key=b"another key")


def _unsign(doc: dict[str, Any]) -> None:
    doc["proof"]["digest"] = sign(Digest.from_json(doc["proof"]["digest"]))


def _unknown_format(doc: dict[str, Any]) -> None:
    doc["format"] = "ledger-subject-export/99"


TAMPERINGS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("edited-assignment", _edit_assignment, "history"),
    ("dropped-middle-event", _drop_middle_event, "chain"),
    ("dropped-last-event", _drop_last_event, "audit_path"),
    ("flipped-sibling", _flip_sibling, "audit_path"),
    ("edited-payload", _edit_payload, "chain"),
    ("resigned-hmac", _resign_hmac, "signature"),
    ("unsigned", _unsign, "signature"),
]


@pytest.mark.parametrize(
    ("tamper", "caught_by"),
    [(t, c) for _, t, c in TAMPERINGS],
    ids=[name for name, _, _ in TAMPERINGS],
)
def test_each_tampering_fails_with_the_check_that_caught_it(
    store: Cli, tmp_path: Path, tamper: Callable[[dict[str, Any]], None], caught_by: str
) -> None:
    doc = export(store, tmp_path)
    assert len(doc["events"]) >= 3  # the middle and the last are different events
    changed = copy.deepcopy(doc)
    tamper(changed)
    report = verify(store, changed, tmp_path, expect=1)
    # The first check to fail is the one that caught it; a later one may fail with it (the
    # history is not re-derived from events whose chain does not hold).
    assert failed(report)[0] == caught_by, report


def test_another_user_s_audit_path_does_not_lead_to_the_root(store: Cli, tmp_path: Path) -> None:
    mine, theirs = export(store, tmp_path), export(store, tmp_path, OTHER)
    assert mine["proof"]["digest"] == theirs["proof"]["digest"]
    for field in ("leaf_index", "siblings"):
        mine["proof"][field] = theirs["proof"][field]
    report = verify(store, mine, tmp_path, expect=1)
    assert failed(report) == ["audit_path"], report


def test_an_unknown_format_is_refused_before_the_rest(store: Cli, tmp_path: Path) -> None:
    doc = export(store, tmp_path)
    _unknown_format(doc)
    report = verify(store, doc, tmp_path, expect=1)
    assert failed(report) == ["format", "chain", "audit_path", "signature", "history"]


def _pem_pair(tmp: Path, name: str) -> tuple[Path, Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    private, public = tmp / f"{name}.pem", tmp / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public, key


def test_an_ed25519_digest_verifies_with_its_key_and_not_once_resigned_by_another(
    store: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public, _ = _pem_pair(tmp_path, "signer")
    other_private, _, _ = _pem_pair(tmp_path, "other")
    digest_file = tmp_path / "digest.json"
    store.run("digest", "--private-key", str(private), "-o", str(digest_file))
    doc = export(store, tmp_path, USER, "--digest", str(digest_file))
    assert doc["proof"]["digest"]["signature"]["alg"] == "Ed25519"
    monkeypatch.delenv("LEDGER_AUDIT_KEY")
    assert verify(store, doc, tmp_path, "--public-key", str(public), expect=0)["ok"]
    resigned = copy.deepcopy(doc)
    resigned["proof"]["digest"] = sign(
        Digest.from_json(doc["proof"]["digest"]), ed25519_private_pem=other_private.read_bytes()
    )
    report = verify(store, resigned, tmp_path, "--public-key", str(public), expect=1)
    assert failed(report) == ["signature"]
    assert "another key" in report["checks"][3]["detail"]
    # Signed, but no key given to check it: the signature check fails and says so.
    report = verify(store, doc, tmp_path, expect=1)
    assert failed(report) == ["signature"] and "no key" in report["checks"][3]["detail"]
