"""subscribers: an index by (segment, id) holding what a send reads of a reader

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 14:40:00
"""
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


# A segment's readers are spread over the whole table; a batch of one segment edition reads them
# from this index (digest/delivery/ledger.py `batch_rows`), a few adjacent pages per 1,000.
_COLUMNS = ['segment', 'id', 'status', 'email', 'name']


def upgrade() -> None:
    op.create_index('ix_subscribers_segment_read', 'subscribers', _COLUMNS, unique=False)


def downgrade() -> None:
    op.drop_index('ix_subscribers_segment_read', table_name='subscribers')
