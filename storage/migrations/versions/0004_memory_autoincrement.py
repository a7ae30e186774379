"""memory_entry ids are never reused on SQLite (AUTOINCREMENT): an index keyed by id must not
mistake a new entry for a deleted one

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # other databases never reuse sequence values
        with op.batch_alter_table("memory_entry", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.alter_column("text", existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("memory_entry", recreate="always") as batch:
            batch.alter_column("text", existing_nullable=False)
