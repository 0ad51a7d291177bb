"""subscribers: ids never reused, and a per-address count of confirmation mails

SQLite gave a removed subscriber's id to the next signup (a rowid table without AUTOINCREMENT
reuses the highest id once it is deleted), so links issued to the removed person acted on the
new one. The table is rebuilt with AUTOINCREMENT; PostgreSQL's sequence never goes back and
needs nothing. Two columns count the confirmation mails of the current day's window, so a
pending address cannot be mailed over and over by repeated signups.

Revision ID: 0003
Revises: 0007
Create Date: 2026-12-04 11:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0007'
branch_labels = None
depends_on = None


def _recreate() -> str:
    # SQLite cannot add AUTOINCREMENT to a table: the batch rebuilds it (copy, drop, rename).
    # env.py switches foreign-key enforcement off around migrations, or dropping the old table
    # would first delete every delivery row that points at it (ON DELETE CASCADE).
    return 'always' if op.get_bind().dialect.name == 'sqlite' else 'auto'


def upgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None, recreate=_recreate(),
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.add_column(sa.Column('confirmations_sent', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('confirmations_since', sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None, recreate=_recreate(),
                              table_kwargs={'sqlite_autoincrement': False}) as batch_op:
        batch_op.drop_column('confirmations_since')
        batch_op.drop_column('confirmations_sent')
