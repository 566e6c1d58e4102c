"""Delivery: alert states with thread replies, the channel's message reference, urgency, and
a log of every delivery attempt.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Claimed alerts were 'pending' with a lease; they are 'sending' now. Retried ones were
    # 'pending' with attempts; they are 'failed' (and due again) now.
    op.execute("UPDATE alerts SET status = 'failed' WHERE status = 'pending' AND attempts > 0")
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('urgent', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('message_ref', sa.String(length=200), nullable=True))
        batch_op.create_foreign_key('fk_alerts_parent_id_alerts', 'alerts', ['parent_id'],
                                    ['id'])
        batch_op.drop_constraint('uq_alerts_story_destination', type_='unique')
        batch_op.create_index('uq_alerts_story_destination', ['story_id', 'destination'],
                              unique=True, sqlite_where=sa.text('parent_id IS NULL'),
                              postgresql_where=sa.text('parent_id IS NULL'))
        batch_op.create_index('uq_alerts_reply_item_destination', ['item_id', 'destination'],
                              unique=True, sqlite_where=sa.text('parent_id IS NOT NULL'),
                              postgresql_where=sa.text('parent_id IS NOT NULL'))

    op.create_table('alert_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('alert_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('grouped', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('alert_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alert_attempts_alert_id'), ['alert_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('alert_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_attempts_alert_id'))
    op.drop_table('alert_attempts')
    op.execute("DELETE FROM alerts WHERE parent_id IS NOT NULL")
    op.execute("UPDATE alerts SET status = 'pending' WHERE status IN ('sending', 'failed')")
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('uq_alerts_reply_item_destination')
        batch_op.drop_index('uq_alerts_story_destination')
        batch_op.create_unique_constraint('uq_alerts_story_destination',
                                          ['story_id', 'destination'])
        batch_op.drop_constraint('fk_alerts_parent_id_alerts', type_='foreignkey')
        batch_op.drop_column('message_ref')
        batch_op.drop_column('parent_id')
        batch_op.drop_column('urgent')
