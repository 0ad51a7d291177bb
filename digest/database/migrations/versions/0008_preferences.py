"""preferences: the categories a reader wants, whether only Ship verdicts, and their segment

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-04 11:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0004'
branch_labels = None
depends_on = None


# Plain ADD/DROP COLUMN on both databases. A batch (copy-and-rename) rebuild of `subscribers` on
# SQLite would drop the old table with foreign keys on, and ON DELETE CASCADE would empty the
# ledger.


def upgrade() -> None:
    op.add_column('subscribers', sa.Column('categories', sa.Text(), nullable=False,
                                           server_default=''))
    op.add_column('subscribers', sa.Column('ship_only', sa.Boolean(), nullable=False,
                                           server_default=sa.false()))
    op.add_column('subscribers', sa.Column('segment', sa.Text(), nullable=False,
                                           server_default='all'))


def downgrade() -> None:
    for column in ('segment', 'ship_only', 'categories'):
        op.execute(f'ALTER TABLE subscribers DROP COLUMN {column}')
