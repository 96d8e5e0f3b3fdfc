"""The two rulebooks of docs/rules.md and the age status each implies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

AgeStatus = Literal[
    "ok", "minor_advisory", "guardian_consent_required", "below_minimum_age", "unknown"
]

DOMESTIC = "xhs-domestic"
INTERNATIONAL = "rednote-international"
UNDETERMINED = "undetermined"
ASSIGNMENTS = (DOMESTIC, INTERNATIONAL, UNDETERMINED)


@dataclass(frozen=True)
class Rulebook:
    id: str
    title: str
    platform: str
    age_rule: str
    content_focus: str
    data_residency: str


RULEBOOKS: dict[str, Rulebook] = {
    DOMESTIC: Rulebook(
        id=DOMESTIC,
        title="Xiaohongshu domestic rulebook",
        platform="Xiaohongshu (domestic)",
        age_rule=(
            "under 18: advised not to use (advisory, not blocked); under 14: guardian consent "
            "required (PIPL treats under-14 data as sensitive)"
        ),
        content_focus="includes explicit rules on political content",
        data_residency="stored in mainland China",
    ),
    INTERNATIONAL: Rulebook(
        id=INTERNATIONAL,
        title="Rednote international rulebook",
        platform="Rednote (international)",
        age_rule="minimum age 13 (mandatory, as in US COPPA)",
        content_focus="prohibits discrimination (race, religion, gender, …)",
        data_residency="stored in Singapore, may be transferred to China",
    ),
    UNDETERMINED: Rulebook(
        id=UNDETERMINED,
        title="no rulebook yet (undetermined, in the review queue)",
        platform="—",
        age_rule="—",
        content_focus="—",
        data_residency="—",
    ),
}


def age_in_years(birth_date: date, on: date) -> int:
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


def age_status(assignment: str, birth_date: date | None, on: date) -> AgeStatus:
    """Age status for the rulebook in force on `on` (not part of the history: it moves
    with the date asked about)."""
    if birth_date is None or assignment == UNDETERMINED:
        return "unknown"
    age = age_in_years(birth_date, on)
    if assignment == DOMESTIC:
        if age < 14:
            return "guardian_consent_required"
        return "minor_advisory" if age < 18 else "ok"
    return "below_minimum_age" if age < 13 else "ok"
