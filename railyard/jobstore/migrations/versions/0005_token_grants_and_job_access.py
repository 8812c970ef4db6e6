"""token SQL-connection grants; the submitting token's data access carried on the job

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sql_connections', sa.JSON(), nullable=True))
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_prefixes', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('sql_connections', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('sql_connections')
        batch_op.drop_column('data_prefixes')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_column('sql_connections')
