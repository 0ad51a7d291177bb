"""delivery batches: record when a batch's request starts

A batch now moves `claimed -> sending(started_at)` in a write committed just before the provider
call, so after a crash a batch whose request never started goes back to pending instead of
being declared uncertain. Batches a sender holds or left unanswered under the older code may
have had their request out: they get `started_at = updated_at`, so they stay in doubt.
Downgrading turns `sending` back into `claimed`, which the older code treats as maybe sent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 11:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('delivery_batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE delivery_batches SET started_at = updated_at "
               "WHERE status IN ('claimed', 'uncertain')")


def downgrade() -> None:
    op.execute("UPDATE delivery_batches SET status = 'claimed' WHERE status = 'sending'")
    with op.batch_alter_table('delivery_batches', schema=None) as batch_op:
        batch_op.drop_column('started_at')
