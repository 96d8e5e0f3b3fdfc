"""Policy files the workbench tests share (tests/unit/test_policy_workbench.py and
tests/e2e/test_policy_workbench.py): the shipped policies' text, a deliberately broken copy
of the cutover terms, and a draft with a shadowed rule."""

from __future__ import annotations

from pathlib import Path

from ledger.resources import policies_dir


def shipped(name: str) -> str:
    return (policies_dir() / f"{name}.toml").read_text()



def unreachable_catch_all(tmp_path: Path) -> Path:
    """The cutover terms with the validity checks dropped from C2 and C3: together they
    match every signup phone, so the catch-all C4 (undetermined) can never fire."""
    text = shipped("tos-2025-12-cutover")
    for region in ('eq = "CN"', 'ne = "CN"'):
        valid = '{ fact = "signup_phone_valid", eq = true }'
        phone = f'{{ fact = "signup_phone_region", {region} }}'
        assert f"[{valid}, {phone}]" in text
        text = text.replace(f"[{valid}, {phone}]", f"[{phone}]")
    path = tmp_path / "cutover-no-catch-all.toml"
    path.write_text(text)
    return path



# A draft whose D2 is never reached: D1 takes all of its cases.
DRAFT = """
version = "tos-2026-09-draft"
effective_from = "2026-09-01T00:00:00Z"

[[rules]]
id = "D1"
when = [{ fact = "residence", eq = "CN" }]
assign = "xhs-domestic"
reason = "residence in mainland China"

[[rules]]
id = "D2"
when = [{ fact = "residence", eq = "CN" }, { fact = "current_phone_region", eq = "CN" }]
assign = "xhs-domestic"
reason = "residence and phone in mainland China (never reached: D1 takes all of these)"

[[rules]]
id = "D3"
when = []
assign = "rednote-international"
reason = "everyone else"
"""
