"""Policy files: the shipped ones load; broken ones report every problem by file and rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.codecs.policy_files import load_policies
from ledger.domain.facts import Facts
from ledger.domain.policy import PolicyError


def test_shipped_policies_load_in_version_order() -> None:
    ps = load_policies()
    assert [p.version for p in ps.bindable] == [
        "tos-2023-legacy",
        "tos-2025-12-cutover",
        "tos-2026-03-residency",
    ]
    assert "wechat-style" in ps and "wechat-style" not in ps.rank
    cutover = datetime(2025, 12, 7, 16, tzinfo=UTC)  # 2025-12-08T00:00+08:00
    assert ps.bound_at_signup(cutover).version == "tos-2025-12-cutover"
    assert ps.bound_at_signup(cutover.replace(minute=0, second=0).replace(hour=15)).version == (
        "tos-2023-legacy"
    )
    assert ps.bound_at_signup(datetime(2000, 1, 1, tzinfo=UTC)).version == "tos-2023-legacy"


def test_wechat_style_decides_by_signup_phone_forever() -> None:
    wechat = load_policies()["wechat-style"]
    facts = Facts(
        signup_phone_valid=True,
        signup_phone_region="CN",
        current_phone_valid=True,
        current_phone_region="US",
        residence="US",
    )
    assert wechat.classify(facts).rule == "W1"


BROKEN = """
version = "tos-broken"
effective_from = "2026-01-01T00:00:00Z"

[[rules]]
id = "B1"
when = [{ fact = "shoe_size", eq = 42 }]
assign = "xhs-domestic"
reason = "x"

[[rules]]
id = "B1"
when = [{ fact = "residence", eq = "CN" }]
assign = "mars-colony"
reason = "y"
"""

SAME_DATE = """
version = "tos-same-date"
effective_from = "2025-12-08T00:00:00+08:00"

[[rules]]
id = "S1"
when = []
assign = "undetermined"
reason = "z"
"""


def test_every_problem_is_reported_with_file_and_rule(tmp_path: Path) -> None:
    for f in Path(load_policies.__globals__["policies_dir"]()).glob("*.toml"):
        (tmp_path / f.name).write_text(f.read_text())
    (tmp_path / "broken.toml").write_text(BROKEN)
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    problems = info.value.problems
    assert any("broken.toml: rule B1: unknown fact 'shoe_size'" in p for p in problems)
    assert any("broken.toml: rule B1: duplicate rule id 'B1'" in p for p in problems)
    assert any("unknown rulebook 'mars-colony'" in p for p in problems)
    assert any("broken.toml: rule B1: no catch-all rule" in p for p in problems)


def test_ambiguous_version_order_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(SAME_DATE)
    (tmp_path / "b.toml").write_text(SAME_DATE.replace("tos-same-date", "tos-other"))
    with pytest.raises(PolicyError, match="unknown version ordering"):
        load_policies(tmp_path)
    (tmp_path / "b.toml").write_text(
        SAME_DATE.replace("tos-same-date", "tos-other").replace(
            'effective_from = "2025-12-08T00:00:00+08:00"', ""
        )
    )
    with pytest.raises(PolicyError, match=r"b\.toml: unknown version ordering"):
        load_policies(tmp_path)


def test_a_toml_datetime_without_offset_in_a_condition_is_a_problem_not_a_crash() -> None:
    import tomllib

    from ledger.domain.policy import parse_policy

    data = tomllib.loads(
        """
version = "tos-x"
effective_from = "2026-01-01T00:00:00Z"
title = "x"
[[rules]]
id = "R1"
assign = "undetermined"
reason = "early sign-ups"
when = [{ fact = "signup_at", before = 2026-03-01T00:00:00 }]
[[rules]]
id = "R2"
when = []
assign = "undetermined"
reason = "everyone else"
"""
    )
    problems: list[str] = []
    parse_policy(data, "x.toml", problems)
    assert any("no UTC offset" in p for p in problems), problems
