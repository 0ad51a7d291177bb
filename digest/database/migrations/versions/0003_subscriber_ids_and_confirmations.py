"""subscribers: ids never reused, and a per-address count of confirmation mails

SQLite gave a removed subscriber's id to the next signup (a rowid table without AUTOINCREMENT
reuses the highest id once it is deleted), so links issued to the removed person acted on the
new one. The table is rebuilt with AUTOINCREMENT; from then on no id is given twice. (An id at
the top deleted before this migration leaves no trace and may be given once more; tokens are
bound to their reader's address, so such an id still reaches nobody's links but its own.)
PostgreSQL's sequence never goes back; it is only moved past the highest id in use.

Two columns count the confirmation mails of the current day's window, so a pending address
cannot be mailed over and over by repeated signups.

Revision ID: 0003
Revises: 0005
Create Date: 2026-12-04 11:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0005'
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
    if op.get_bind().dialect.name == 'postgresql':
        # The sequence never goes back, but rows written with explicit ids (a hand-made restore)
        # leave it behind them: move it past the highest id, so the next one is new too.
        op.execute("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), GREATEST("
                   "(SELECT COALESCE(MAX(id), 0) FROM subscribers), "
                   "(SELECT last_value FROM subscribers_id_seq), 1))")


def downgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None, recreate=_recreate(),
                              table_kwargs={'sqlite_autoincrement': False}) as batch_op:
        batch_op.drop_column('confirmations_since')
        batch_op.drop_column('confirmations_sent')
