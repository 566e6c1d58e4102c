"""Source leases of their own: who is polling a source and until when (renewed while its poll
waits and runs), instead of borrowing the next poll time; and the feed's RSS <ttl>, so it is
honoured after a 304 too.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('leased_until', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('leased_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('ttl_seconds', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sources', schema=None) as batch_op:
        for column in ('ttl_seconds', 'leased_by', 'leased_until'):
            batch_op.drop_column(column)
