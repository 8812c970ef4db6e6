"""the export of every SUCCEEDED job to MLflow: its state, run id and registered version

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 03:40:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'mlflow_export',
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('run_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('experiment_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('registered_name', sqlmodel.sql.sqltypes.AutoString(length=512),
                  nullable=True),
        sa.Column('mlflow_version', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('exported_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('job_id'),
    )
    op.create_index('ix_mlflow_export_status_next', 'mlflow_export',
                    ['status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_mlflow_export_status_next', table_name='mlflow_export')
    op.drop_table('mlflow_export')
