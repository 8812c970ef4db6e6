"""job attempts (retries) and the runner's heartbeat

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 00:40:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_attempt',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('ray_submission_id', sqlmodel.sql.sqltypes.AutoString(length=128),
                  nullable=True),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('failure_kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('error_phase', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['job.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('job_id', 'attempt', name='uq_job_attempt_number'),
    )
    with op.batch_alter_table('job_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_attempt_job_id'), ['job_id'], unique=False)
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempt', sa.Integer(), server_default='1',
                                      nullable=False))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('attempt')
    with op.batch_alter_table('job_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_attempt_job_id'))
    op.drop_table('job_attempt')
