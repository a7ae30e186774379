"""initial schema: story, step (a tree), memory_entry

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "story",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("premise", sa.Text(), nullable=False),
        sa.Column("outline", sa.Text(), nullable=False),
        sa.Column("genre", sa.String(length=100), nullable=False),
        sa.Column("language", sa.String(length=20), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("head_step_id", sa.Integer(), nullable=True),
        sa.Column("memory_version", sa.Integer(), nullable=False),
        _created_at(),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "step",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("story_id", sa.Integer(), sa.ForeignKey("story.id", ondelete="CASCADE"), nullable=False),
        sa.Column("parent_id", sa.Integer(), sa.ForeignKey("step.id", ondelete="CASCADE"), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("paragraph", sa.Text(), nullable=False),
        sa.Column("short_memory", sa.Text(), nullable=False),
        sa.Column("plans", sa.JSON(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("model", sa.String(length=500), nullable=False),
        sa.Column("trace", sa.JSON(), nullable=False),
        _created_at(),
    )
    op.create_index("ix_step_story_id", "step", ["story_id"])
    # story.head_step_id -> step.id closes the cycle, so it is added once both tables exist.
    with op.batch_alter_table("story") as batch:
        batch.create_foreign_key("fk_story_head_step", "step", ["head_step_id"], ["id"], ondelete="SET NULL")
    op.create_table(
        "memory_entry",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("story_id", sa.Integer(), sa.ForeignKey("story.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step_id", sa.Integer(), sa.ForeignKey("step.id", ondelete="CASCADE"), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _created_at(),
        sa.Column("last_retrieved_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_memory_entry_story_id", "memory_entry", ["story_id"])
    op.create_index("ix_memory_entry_step_id", "memory_entry", ["step_id"])


def downgrade() -> None:
    op.drop_table("memory_entry")
    with op.batch_alter_table("story") as batch:
        batch.drop_constraint("fk_story_head_step", type_="foreignkey")
    op.drop_table("step")
    op.drop_table("story")
