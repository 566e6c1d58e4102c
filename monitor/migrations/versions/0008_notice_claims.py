"""An operator notice claimed and not yet known to be sent, and until when its sender holds
it: a notice whose sender died between claiming and sending it is sent by another, instead of
being lost.

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notice_pending', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('notice_pending_until', sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.drop_column('notice_pending_until')
        batch_op.drop_column('notice_pending')
