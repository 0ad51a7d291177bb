"""votes: readers answer "Would you ship it?" per tool from the issue's links

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-04 11:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'votes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tool_id', sa.Integer(), nullable=False),
        sa.Column('subscriber_id', sa.Integer(), nullable=True),
        sa.Column('issue_id', sa.Integer(), nullable=True),
        sa.Column('ship', sa.Boolean(), nullable=False),
        sa.Column('voted_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tool_id'], ['tools.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['issue_id'], ['issues.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('subscriber_id', 'tool_id', name='uq_votes_subscriber_tool'),
    )
    op.create_index(op.f('ix_votes_tool_id'), 'votes', ['tool_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_votes_tool_id'), table_name='votes')
    op.drop_table('votes')
