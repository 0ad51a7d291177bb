"""segment editions: one render per distinct reader preference set, and each delivery's edition

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 12:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'issue_editions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('issue_id', sa.Integer(), nullable=False),
        sa.Column('segment', sa.Text(), nullable=False),
        sa.Column('categories', sa.Text(), nullable=False),
        sa.Column('ship_only', sa.Boolean(), nullable=False),
        sa.Column('shared', sa.Boolean(), nullable=False),
        sa.Column('empty', sa.Boolean(), nullable=False),
        sa.Column('comparisons', sa.Integer(), nullable=False),
        sa.Column('subject', sa.Text(), nullable=False),
        sa.Column('preheader', sa.Text(), nullable=False),
        sa.Column('html', sa.Text(), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('html_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('issue_id', 'segment', name='uq_issue_editions_segment'),
    )
    # A plain column without a foreign key: SQLite can add a constraint only by rebuilding the
    # table (which would cascade-delete the ledger), and an edition goes only with its issue,
    # whose deletion takes the deliveries with it anyway.
    op.add_column('deliveries', sa.Column('edition_id', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.execute('ALTER TABLE deliveries DROP COLUMN edition_id')
    op.drop_table('issue_editions')
