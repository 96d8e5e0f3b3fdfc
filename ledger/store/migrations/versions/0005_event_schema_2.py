"""Event schema version 2: the fields of `IdentityVerified` and `SignedUp.locale` with each
event, and the facts they give (`id_document_country`, `id_document_kind`,
`signup_locale`) with each user's cached state.

Nothing stored changes: no event of version 1 carries them, so they are null on every row
there is, and the chain's canonical form leaves a null one out (docs/audit.md), so every
stored link and chain head stays valid as it is. A downgrade drops the columns, and with
them what events of version 2 said: their links then no longer verify.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger.domain import limits

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("locale", sa.String(limits.LOCALE_CHARS)))
    op.add_column("events", sa.Column("document_country", sa.String(limits.COUNTRY_CHARS)))
    op.add_column("events", sa.Column("document_kind", sa.String(limits.DOCUMENT_KIND_CHARS)))
    op.add_column("users", sa.Column("id_document_country", sa.String(limits.COUNTRY_CHARS)))
    op.add_column("users", sa.Column("id_document_kind", sa.String(limits.DOCUMENT_KIND_CHARS)))
    op.add_column("users", sa.Column("signup_locale", sa.String(limits.LOCALE_CHARS)))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("signup_locale")
        batch.drop_column("id_document_kind")
        batch.drop_column("id_document_country")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("document_kind")
        batch.drop_column("document_country")
        batch.drop_column("locale")
