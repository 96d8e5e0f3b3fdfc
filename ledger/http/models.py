"""The response documents as OpenAPI schemas. The endpoints answer with the dictionaries
the query layer builds (`row_json`, `Current.as_json`, the same the CLI's `--json` prints);
these models only describe them, and the schema tests check each answer against them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Instant = str  # ISO 8601 in UTC with Z, e.g. 2026-04-01T00:00:00Z


class HistoryEntry(BaseModel):
    valid_from: Instant = Field(description="Start of the period in valid time.")
    valid_to: Instant | None = Field(description="End of the period (exclusive); null: open.")
    assignment: str = Field(
        description="xhs-domestic, rednote-international or undetermined.",
        examples=["rednote-international"],
    )
    policy: str = Field(description="The policy (terms version) that decided.")
    rule: str = Field(description="The rule of the policy that fired.", examples=["R4"])
    reason: str
    facts: dict[str, Any] = Field(description="The facts the rule read.")
    evidence: list[str] = Field(description="Ids of the events those facts came from.")
    recorded_at: Instant = Field(description="Record time: when the ledger learned it.")
    superseded_at: Instant | None = Field(
        description="Record time at which a later-arriving event replaced this belief; "
        "null: still believed."
    )


ON_RECORD = (
    "False when `believed_at` is before the ledger recorded anything of the user: it held no "
    "record of the user at that record time (which says nothing about whether the account "
    "existed then). True otherwise."
)
FIRST_RECORDED_AT = (
    "With `believed_at`: the record time of the user's first event, when the ledger first "
    "heard of the user. Null without `believed_at`."
)


class History(BaseModel):
    user_id: str
    entries: list[HistoryEntry] = Field(
        description="Empty when `on_record` is false: the ledger had no record of the user."
    )
    on_record: bool = Field(description=ON_RECORD)
    first_recorded_at: Instant | None = Field(description=FIRST_RECORDED_AT)


class RetainedEntry(BaseModel):
    valid_from: Instant
    valid_to: Instant | None
    assignment: str
    policy: str
    rule: str
    recorded_at: Instant
    superseded_at: Instant | None


class Retained(BaseModel):
    user_id: str
    erased_at: Instant = Field(description="Record time of the erasure.")
    request_id: str = Field(description="The operator's reference of the erasure request.")
    retained: list[RetainedEntry] = Field(
        description="The history skeleton kept for legal retention; empty when the erasure "
        "ran without LEDGER_RETAIN_ASSIGNMENTS=1."
    )


class Rulebook(BaseModel):
    id: str
    platform: str
    age_rule: str
    content_focus: str
    data_residency: str


class Current(BaseModel):
    user_id: str
    at: Instant = Field(description="The valid time asked about.")
    assignment: str | None = Field(
        description="null: not signed up at that time, or (`on_record` false) the ledger held "
        "no record of the user at `believed_at`."
    )
    since: Instant | None
    until: Instant | None
    policy: str | None
    rule: str | None
    reason: str | None
    facts: dict[str, Any] | None
    evidence: list[str] | None
    rulebook: Rulebook | None
    age_status: Literal[
        "ok", "minor_advisory", "guardian_consent_required", "below_minimum_age", "unknown"
    ]
    signup_at: Instant | None = Field(
        description="The sign-up as the ledger knew it (at `believed_at`, when given); null: "
        "none on record."
    )
    on_record: bool = Field(description=ON_RECORD)
    first_recorded_at: Instant | None = Field(description=FIRST_RECORDED_AT)


class Explanation(BaseModel):
    user_id: str
    at: Instant
    explanation: str = Field(description="A statement the user or an auditor can read.")
    on_record: bool = Field(description=ON_RECORD)
    first_recorded_at: Instant | None = Field(description=FIRST_RECORDED_AT)


class SubjectExport(BaseModel):
    """The subject export of docs/privacy.md, as `ledger subject export` writes it."""

    format: str = Field(description="The document's version: ledger-subject-export/1.")
    user_id: str
    generated_at: Instant
    events: list[dict[str, Any]] = Field(
        description="Every stored event of the user in chain order: the fields the chain "
        "link hashes, and app_seq."
    )
    history: list[dict[str, Any]] = Field(
        description="Every history row, believed and superseded, in the decision log's form."
    )
    explanation: list[dict[str, Any]] = Field(
        description="Per believed period: the statement of `ledger explain` and the rulebook's "
        "terms."
    )
    policies: dict[str, str] = Field(description="version -> content hash of each policy named.")
    proof: dict[str, Any] = Field(
        description="links, head, length, chain_encoding; the signed digest and its id; the "
        "leaf, leaf_index, tree_size and siblings of the RFC 6962 audit path."
    )


class UserCounts(BaseModel):
    total: int
    by_assignment: dict[str, int] = Field(
        description="Users per assignment now; 'not signed up' for users with events but no "
        "sign-up yet."
    )


class DeadLetterCounts(BaseModel):
    total: int
    unresolved: int


class SourceStats(BaseModel):
    source: str = Field(description="file:<sha256>, kafka:<topic> or redrive:<uuid>.")
    events: int
    last_recorded_at: Instant | None = Field(
        description="The latest record time applied from this source."
    )


class Stats(BaseModel):
    users: UserCounts
    events: int
    dead_letters: DeadLetterCounts
    sources: list[SourceStats]
    computed_at: Instant = Field(description="When these figures were read (cached briefly).")


class DeadLetter(BaseModel):
    id: int
    recorded_at: Instant
    source: str
    position: str
    partition: int | None
    offset: int | None
    reason: str
    raw_size: int = Field(description="Size of the input before it was cut to the store's limit.")
    event_id: str | None
    user_id: str | None
    resolved_at: Instant | None
    resolution: str | None
    raw_kept: int
    raw_truncated: bool
    raw_base64: str = Field(description="The raw input as kept (may contain personal data).")
    raw_text: str | None = Field(description="The same as text, when it is UTF-8.")


class DeadLetters(BaseModel):
    items: list[DeadLetter]
    next_after: int | None = Field(
        description="More may follow: ask again with after=this id (null: that was all)."
    )


class Terms(BaseModel):
    age_rule: str
    content_focus: str
    data_residency: str


class Change(BaseModel):
    """One record of the changefeed: a history row the ledger believed, with its decision.
    The same object `ledger changes` prints and the Kafka relay publishes (in Avro)."""

    seq: int = Field(description="The record's position in the feed; strictly increasing.")
    decision_id: str = Field(
        description="Stable id of the decision (user, valid_from, recorded_at), as in "
        "`ledger decisions export`: deduplicate by it."
    )
    user_id: str
    kind: Literal["assigned", "corrected", "erased"] = Field(
        description="assigned: a new assignment period; corrected: a late-arriving event "
        "changed the decision for valid time the ledger had already decided; erased: the "
        "user was erased (valid_from and recorded_at are the erasure's, and the fields "
        "naming a decision are null)."
    )
    valid_from: Instant = Field(description="Start of the period in valid time.")
    valid_to: Instant | None = Field(description="End of the period (exclusive); null: open.")
    assignment: str | None = Field(
        description="xhs-domestic, rednote-international or undetermined; null only in an "
        "erased record.",
        examples=["rednote-international"],
    )
    policy: str | None = Field(description="The policy (terms version) that decided.")
    policy_hash: str | None = Field(description="The pinned hash of that policy version.")
    rule: str | None = Field(description="The rule of the policy that fired.", examples=["R4"])
    reason: str | None
    terms: Terms | None = Field(description="What the assigned rulebook means for the user.")
    recorded_at: Instant = Field(description="Record time: when the ledger learned it.")
    app_seq: int | None = Field(
        description="The application seq of the event that made the decision; null for "
        "decisions recorded before the store had a changefeed."
    )
    announced: bool = Field(
        description="Whether the Kafka relay publishes it (false: recorded while a store "
        "was rebuilt, its decisions announced by the store it replaced)."
    )


class Changes(BaseModel):
    changes: list[Change] = Field(description="Records with a seq above `after`, in seq order.")
    next_after: int = Field(
        description="Ask again with after=this for the records that follow: the last "
        "record's seq, or `after` itself when there was none (nothing newer yet)."
    )


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    schema_revision: str | None
