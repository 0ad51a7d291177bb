"""click counts: the links of each issue, counts per link (people and machines apart), and
the opt-in per-reader table

Revision ID: 0006
Revises: 0009
Create Date: 2026-12-04 11:40:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('issue_links',
    sa.Column('issue_id', sa.Integer(), nullable=False),
    sa.Column('link_no', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('issue_id', 'link_no')
    )
    op.create_table('link_clicks',
    sa.Column('issue_id', sa.Integer(), nullable=False),
    sa.Column('link_no', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('human', sa.Integer(), nullable=False),
    sa.Column('machine', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('issue_id', 'link_no')
    )
    op.create_table('link_readers',
    sa.Column('issue_id', sa.Integer(), nullable=False),
    sa.Column('link_no', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('first_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('issue_id', 'link_no', 'subscriber_id')
    )
    op.create_index(op.f('ix_link_readers_subscriber_id'), 'link_readers', ['subscriber_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_link_readers_subscriber_id'), table_name='link_readers')
    op.drop_table('link_readers')
    op.drop_table('link_clicks')
    op.drop_table('issue_links')
