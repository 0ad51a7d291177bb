"""preflight: what an issue was rendered with, and which issue a complaint is about

`issues.rendered_with` keeps the identity settings (base URL, From, postal address) an issue's
HTML shows, so an issue not yet sending is rendered again when they change. A week a schedule
firing refused is stored with the new status `blocked` (a plain string column: no constraint
to change). `webhook_events.issue_id` ties a complaint to its issue for the complaint cut-off.

Revision ID: 0005
Revises: 0007
Create Date: 2026-12-04 11:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('issues', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rendered_with', sa.Text(), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('issue_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_webhook_events_issue_id'), ['issue_id'],
                              unique=False)
        batch_op.create_foreign_key('fk_webhook_events_issue_id', 'issues', ['issue_id'],
                                    ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_constraint('fk_webhook_events_issue_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_webhook_events_issue_id'))
        batch_op.drop_column('issue_id')
    # A plain DROP COLUMN (SQLite 3.35+ has it): rebuilding `issues` in batch mode would
    # drop the table, and its ON DELETE CASCADE would take the ledger with it.
    op.drop_column('issues', 'rendered_with')
