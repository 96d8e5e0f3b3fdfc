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


# The draft terms docs/event-contract.md takes through `policy check`, `policy test` and
# `impact`: the March 2026 terms with a verified mainland resident identity card deciding
# before anything else (facts of event schema version 2).
REAL_NAME_VERSION = "tos-2026-07-real-name"
REAL_NAME_RULE = """
[[rules]]
id = "N1"
when = [
  { fact = "id_document_kind", eq = "resident_id" }, { fact = "id_document_country", eq = "CN" },
]
assign = "xhs-domestic"
reason = "your identity is verified with a mainland-China resident identity card"
"""
REAL_NAME_PROMISES = """
[[invariants]]
id = "mainland-resident-id-domestic"
kind = "implies"
description = "a verified mainland resident identity card decides, whatever residence or phone"
when = [
  { fact = "id_document_kind", eq = "resident_id" }, { fact = "id_document_country", eq = "CN" },
]
assign = "xhs-domestic"
rule = "N1"

[[invariants]]
id = "foreign-residence-international"
kind = "implies"
description = "without a mainland document, a residence outside mainland China decides"
when = [
  { fact = "id_document_country", ne = "CN" },
  { fact = "residence", set = true }, { fact = "residence", ne = "CN" },
]
assign = "rednote-international"
rule = "R2"

[[examples]]
id = "resident-id-over-a-foreign-phone"
events = [
  { type = "SignedUp", occurred_at = "2026-07-10T09:00:00Z", phone = "+16045550123", channel = "rednote-app", locale = "en-CA" },
  { type = "IdentityVerified", occurred_at = "2026-07-12T00:00:00Z", document_country = "CN", document_kind = "resident_id" },
]
at = "2026-07-13"
expect = "xhs-domestic"
rule = "N1"

[[examples]]
id = "a-travel-permit-is-no-resident-id"
description = "a Hong Kong resident verified with a mainland travel permit: the phone decides"
events = [
  { type = "SignedUp", occurred_at = "2026-07-10T09:00:00Z", phone = "+85251234567", channel = "rednote-app", locale = "zh-HK" },
  { type = "IdentityVerified", occurred_at = "2026-07-12T00:00:00Z", document_country = "CN", document_kind = "other" },
]
at = "2026-07-13"
expect = "rednote-international"
rule = "R4"
"""  # noqa: E501 (TOML's inline tables are one line each)


def real_name_draft() -> str:
    """The March 2026 terms as a new version, N1 first, with promises of its own (the
    copied ones are about the March terms)."""
    text = shipped("tos-2026-03-residency")
    rules = text[text.index("[[rules]]") : text.index("# --- what this policy promises")]
    header = (
        f'version = "{REAL_NAME_VERSION}"\n'
        'effective_from = "2026-07-01T00:00:00+08:00"\n'
        "bindable = true\n"
        'title = "July 2026 real-name terms (draft)"\n'
    )
    return header + REAL_NAME_RULE + "\n" + rules + REAL_NAME_PROMISES
