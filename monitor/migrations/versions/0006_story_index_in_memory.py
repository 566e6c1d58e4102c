"""Story lookup moves to an index each process keeps in memory (monitor/store/storyindex.py),
filled from the items' own fingerprints: the `item_bands` table, some 40 rows an item, goes;
items get an index on `first_seen_at`, which fills the story window at start (and serves
`monitor rules test --since` and `monitor stories`).

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('item_bands', schema=None) as batch_op:
        batch_op.drop_index('ix_item_bands_band')
    op.drop_table('item_bands')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index('ix_items_first_seen_at', ['first_seen_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_first_seen_at')
    # Emptied: the words of items stored meanwhile are not put back, so those items are
    # found by link only until they leave the story window.
    op.create_table('item_bands',
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('band', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id', 'band')
    )
    with op.batch_alter_table('item_bands', schema=None) as batch_op:
        batch_op.create_index('ix_item_bands_band', ['band', 'created_at', 'item_id'],
                              unique=False)
