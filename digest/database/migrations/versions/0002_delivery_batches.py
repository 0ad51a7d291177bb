"""delivery batches: a claim writes one batch row, not a row per recipient

Deliveries are planned into batches (`delivery_batches`, one provider request each); claims,
leases and uncertainty move to the batch row. The two ledger indexes over columns that change
while sending (status, batch key) go, so an outcome is written to its row alone. Existing
ledgers are carried over: a batch per earlier request key for rows in flight or uncertain
(uncertain now, key kept, so an idempotent provider still recognises the request), and the
other rows in runs of up to 1,000 in id order (pending if any of them is, otherwise done).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 08:40:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_RUN = 1000
_IN_FLIGHT = ("claimed", "uncertain")


def upgrade() -> None:
    op.create_table('delivery_batches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('issue_id', sa.Integer(), nullable=False),
    sa.Column('batch_no', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
    sa.Column('first_id', sa.Integer(), nullable=False),
    sa.Column('last_id', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('issue_id', 'batch_no', name='uq_delivery_batches_issue_no'),
    sa.UniqueConstraint('key', name='uq_delivery_batches_key')
    )
    with op.batch_alter_table('delivery_batches', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_batches_issue_status_first',
                              ['issue_id', 'status', 'first_id'], unique=False)

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('batch_no', sa.Integer(), nullable=False,
                                      server_default='0'))
    _carry_over(op.get_bind())
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.alter_column('batch_no', server_default=None)
        batch_op.drop_index('ix_deliveries_issue_status_id')
        batch_op.drop_index('ix_deliveries_batch')
        batch_op.drop_column('lease_until')


def _carry_over(conn) -> None:
    """Put every existing delivery into a batch (see the module docstring)."""
    now = sa.func.now() if conn.dialect.name == "postgresql" else sa.text("CURRENT_TIMESTAMP")
    batches = sa.table('delivery_batches', *(sa.column(c) for c in (
        'issue_id', 'batch_no', 'status', 'key', 'first_id', 'last_id', 'size', 'attempts',
        'reason', 'updated_at')))
    issues = [row[0] for row in conn.execute(sa.text("SELECT DISTINCT issue_id FROM deliveries"))]
    for issue_id in issues:
        rows = conn.execute(sa.text(
            "SELECT id, status, batch_key FROM deliveries WHERE issue_id = :i ORDER BY id"),
            {"i": issue_id}).fetchall()
        keyed: dict[str, list[int]] = {}
        runs: list[list[tuple[int, str]]] = [[]]
        for delivery_id, status, key in rows:
            if status in _IN_FLIGHT and key:
                keyed.setdefault(key, []).append(delivery_id)
                continue
            if len(runs[-1]) == _RUN:
                runs.append([])
            runs[-1].append((delivery_id, "pending" if status in _IN_FLIGHT else status))
        made = [(ids, "uncertain", key) for key, ids in keyed.items()]
        made += [([i for i, _ in run], "pending" if any(s == "pending" for _, s in run) else "done",
                  None) for run in runs if run]
        for batch_no, (ids, status, key) in enumerate(made):
            conn.execute(sa.insert(batches).values(
                issue_id=issue_id, batch_no=batch_no, status=status, key=key, first_id=min(ids),
                last_id=max(ids), size=len(ids), attempts=0, reason="", updated_at=now))
            for start in range(0, len(ids), _RUN):
                conn.execute(sa.text(
                    "UPDATE deliveries SET batch_no = :n, status = CASE WHEN status IN "
                    "('claimed', 'uncertain') THEN 'pending' ELSE status END WHERE id = :id"),
                    [{"n": batch_no, "id": i} for i in ids[start:start + _RUN]])


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_deliveries_batch', ['batch_key'], unique=False)
        batch_op.create_index('ix_deliveries_issue_status_id', ['issue_id', 'status', 'id'],
                              unique=False)
    # Rows of an unanswered request become uncertain again under its key; the rest of the
    # open rows are plain pending rows.
    op.execute("UPDATE deliveries SET status = 'uncertain', batch_key = (SELECT b.key FROM "
               "delivery_batches b WHERE b.issue_id = deliveries.issue_id AND b.batch_no = "
               "deliveries.batch_no) WHERE status = 'pending' AND EXISTS (SELECT 1 FROM "
               "delivery_batches b WHERE b.issue_id = deliveries.issue_id AND b.batch_no = "
               "deliveries.batch_no AND b.status IN ('claimed', 'uncertain') AND b.key IS NOT NULL)")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('batch_no')
    with op.batch_alter_table('delivery_batches', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_batches_issue_status_first')
    op.drop_table('delivery_batches')
