"""Baseline: the schema of every store made before migrations (metadata and log tables).

Revision ID: 0001
Revises:
Create Date: 2026-12-02

Idempotent: a store made before migrations may lack the log tables (``predictions``,
``feedback``; they were created when something was first logged), so :func:`create_missing`
creates only the absent tables, and the store is then stamped at this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = sa.MetaData()

sa.Table(
    "datasets", SCHEMA,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("source_fingerprint", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("n_rows", sa.Integer(), nullable=False),
    sa.Column("split_sizes", sa.JSON(), nullable=False),
    sa.Column("report", sa.JSON(), nullable=False),
    sa.Column("artifact", sa.Text(), nullable=False),
)
sa.Table(
    "dataset_parents", SCHEMA,
    sa.Column("child_id", sa.String(64), sa.ForeignKey("datasets.id"), primary_key=True),
    sa.Column("parent_id", sa.String(64), sa.ForeignKey("datasets.id"), primary_key=True),
)
sa.Table(
    "dataset_feedback", SCHEMA,
    sa.Column("dataset_id", sa.String(64), sa.ForeignKey("datasets.id"), primary_key=True),
    sa.Column("feedback_id", sa.String(32), primary_key=True, index=True),
    sa.Column("role", sa.String(16), nullable=False),
)
sa.Table(
    "runs", SCHEMA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("run_key", sa.String(64), nullable=False, index=True),
    sa.Column("dataset_id", sa.String(64), sa.ForeignKey("datasets.id"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("config", sa.JSON(), nullable=False),
    sa.Column("history", sa.JSON(), nullable=False),
    sa.Column("lineage", sa.JSON(), nullable=False),
)
sa.Table(
    "model_versions", SCHEMA,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("dataset_id", sa.String(64), sa.ForeignKey("datasets.id"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_type", sa.String(64), nullable=False),
    sa.Column("task", sa.String(32), nullable=False),
    sa.Column("metrics", sa.JSON(), nullable=False),
    sa.Column("artifact", sa.Text(), nullable=False),
    sa.Column("verdict", sa.JSON(), nullable=True),
)
sa.Table(
    "aliases", SCHEMA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer(), sa.ForeignKey("model_versions.version"), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "alias_history", SCHEMA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, index=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("previous_version", sa.Integer(), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "events", SCHEMA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("detail", sa.JSON(), nullable=False),
)
sa.Table(
    "predictions", SCHEMA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_version", sa.Integer(), nullable=True, index=True),
    sa.Column("input", sa.JSON(), nullable=False),
    sa.Column("output", sa.JSON(), nullable=False),
    sa.Column("latency_ms", sa.Float(), nullable=False),
)
sa.Table(
    "feedback", SCHEMA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.id"), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("value", sa.JSON(), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
)


def create_missing(connection: Connection) -> None:
    """Create the baseline tables (and their indexes) this database lacks."""
    SCHEMA.create_all(connection, checkfirst=True)


def upgrade() -> None:
    create_missing(op.get_bind())


def downgrade() -> None:
    SCHEMA.drop_all(op.get_bind())
