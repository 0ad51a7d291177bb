"""outcome attribution: the issue a reader left by, the delivery a provider event names, and
the cached ledger totals of finished issues

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-04 14:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0006'
branch_labels = None
depends_on = None


# Plain ADD COLUMN / CREATE TABLE: a batch rebuild of `subscribers` on SQLite would drop the
# table with foreign keys on, and ON DELETE CASCADE would empty the ledger.


def upgrade() -> None:
    op.add_column('subscribers', sa.Column('left_issue_id', sa.Integer(), nullable=True))
    op.add_column('webhook_events', sa.Column('delivery_id', sa.Integer(), nullable=True))
    op.create_table('issue_totals',
    sa.Column('issue_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('planned', sa.Integer(), nullable=False),
    sa.Column('delivered', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.Column('uncertain', sa.Integer(), nullable=False),
    sa.Column('open', sa.Integer(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('issue_id')
    )


def downgrade() -> None:
    op.drop_table('issue_totals')
    op.execute('ALTER TABLE webhook_events DROP COLUMN delivery_id')
    op.execute('ALTER TABLE subscribers DROP COLUMN left_issue_id')
