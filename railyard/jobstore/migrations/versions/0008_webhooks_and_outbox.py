"""webhook endpoints, the outbox of job events, deliveries and their attempts

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:10:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook_endpoint',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('secret_encrypted', sa.Text(), nullable=False),
        sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_webhook_endpoint_owner', 'webhook_endpoint', ['owner'], unique=False)
    op.create_table(
        'webhook_outbox_event',
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('fanned_out_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('payload', sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint('seq'),
        sa.UniqueConstraint('event_id'),
    )
    op.create_index('ix_webhook_outbox_pending', 'webhook_outbox_event',
                    ['fanned_out_at', 'seq'], unique=False)
    op.create_table(
        'webhook_delivery',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('endpoint_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('event_seq', sa.Integer(), nullable=False),
        sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('event_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_webhook_delivery_endpoint_status_id', 'webhook_delivery',
                    ['endpoint_id', 'status', 'id'], unique=False)
    op.create_index('ix_webhook_delivery_status_next', 'webhook_delivery',
                    ['status', 'next_attempt_at'], unique=False)
    op.create_table(
        'webhook_attempt',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('delivery_id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('http_status', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('duration_ms', sa.Float(), nullable=True),
        sa.Column('next_retry_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_webhook_attempt_delivery_id', 'webhook_attempt', ['delivery_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_attempt_delivery_id', table_name='webhook_attempt')
    op.drop_table('webhook_attempt')
    op.drop_index('ix_webhook_delivery_status_next', table_name='webhook_delivery')
    op.drop_index('ix_webhook_delivery_endpoint_status_id', table_name='webhook_delivery')
    op.drop_table('webhook_delivery')
    op.drop_index('ix_webhook_outbox_pending', table_name='webhook_outbox_event')
    op.drop_table('webhook_outbox_event')
    op.drop_index('ix_webhook_endpoint_owner', table_name='webhook_endpoint')
    op.drop_table('webhook_endpoint')
