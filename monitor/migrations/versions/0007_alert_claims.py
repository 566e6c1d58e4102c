"""A delivery pass's claim on its alerts: the token of the pass holding an alert while it is
`sending`, so that a pass whose lease ran out (stalled on a failing database, say) cannot
settle, give back or extend what another pass has taken since.

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_column('claim')
