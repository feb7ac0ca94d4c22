"""Alembic environment: runs on the engine handed over by ``clawhq.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

# Imported for their tables, which join Base's metadata.
import clawhq.db.backups
import clawhq.db.budgets  # noqa: F401
from clawhq.db.models import Base

engine: Engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
