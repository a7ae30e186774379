"""playthrough: a reader's branch of a story; step.playthrough_id marks its scenes

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "playthrough",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("story_id", sa.Integer(), sa.ForeignKey("story.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reader", sa.String(length=200), nullable=False),
        sa.Column("start_step_id", sa.Integer(), sa.ForeignKey("step.id", ondelete="CASCADE"), nullable=False),
        sa.Column("head_step_id", sa.Integer(), sa.ForeignKey("step.id", ondelete="CASCADE"), nullable=False),
        sa.Column("choices", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_playthrough_story_id", "playthrough", ["story_id"])
    with op.batch_alter_table("step") as batch:
        batch.add_column(sa.Column("playthrough_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_step_playthrough", "playthrough", ["playthrough_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_index("ix_step_playthrough_id", ["playthrough_id"])


def downgrade() -> None:
    with op.batch_alter_table("step") as batch:
        batch.drop_index("ix_step_playthrough_id")
        batch.drop_constraint("fk_step_playthrough", type_="foreignkey")
        batch.drop_column("playthrough_id")
    op.drop_table("playthrough")
