"""composite indexes for the job list queries; job priority; per-team quotas

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:20:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# (name, columns): every GET /v1/jobs filter (none, owner, project, status and their
# combinations) walks one of these in created_at, id order; the queue walks the last one.
LIST_INDEXES = (
    ('ix_job_created_id', ['created_at', 'id']),
    ('ix_job_owner_created_id', ['owner', 'created_at', 'id']),
    ('ix_job_project_created_id', ['project', 'created_at', 'id']),
    ('ix_job_status_created_id', ['status', 'created_at', 'id']),
    ('ix_job_owner_status_created_id', ['owner', 'status', 'created_at', 'id']),
    ('ix_job_owner_project_created_id', ['owner', 'project', 'created_at', 'id']),
    ('ix_job_project_status_created_id', ['project', 'status', 'created_at', 'id']),
    ('ix_job_status_priority_created_id', ['status', 'priority', 'created_at', 'id']),
)


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), server_default='50',
                                      nullable=False))
    for name, columns in LIST_INDEXES:
        op.create_index(name, 'job', columns, unique=False)
    op.create_index('ix_job_event_job_id_id', 'job_event', ['job_id', 'id'], unique=False)
    op.create_table(
        'team_quota',
        sa.Column('team', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('max_jobs', sa.Integer(), nullable=True),
        sa.Column('max_cpus', sa.Float(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_by', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.PrimaryKeyConstraint('team'),
    )


def downgrade() -> None:
    op.drop_table('team_quota')
    op.drop_index('ix_job_event_job_id_id', table_name='job_event')
    for name, _ in LIST_INDEXES:
        op.drop_index(name, table_name='job')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('priority')
