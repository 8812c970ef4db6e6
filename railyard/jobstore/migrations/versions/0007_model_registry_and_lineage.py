"""model registry (versions, aliases, alias moves) and job lineage, reruns

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 03:00:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lineage', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('rerun_of', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('pinned_files', sa.JSON(), nullable=True))
    op.create_table(
        'model_version',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('metrics', sa.JSON(), nullable=True),
        sa.Column('workflow_name', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('spec_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('job_id'),
        sa.UniqueConstraint('owner', 'name', 'version', name='uq_model_version_number'),
    )
    op.create_table(
        'model_alias',
        sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('alias', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('owner', 'name', 'alias'),
    )
    op.create_table(
        'model_alias_event',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('alias', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('from_version', sa.Integer(), nullable=True),
        sa.Column('to_version', sa.Integer(), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('message', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_model_alias_event_model', 'model_alias_event', ['owner', 'name', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_model_alias_event_model', table_name='model_alias_event')
    op.drop_table('model_alias_event')
    op.drop_table('model_alias')
    op.drop_table('model_version')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('pinned_files')
        batch_op.drop_column('rerun_of')
        batch_op.drop_column('lineage')
