"""Alembic environment: runs on the engine handed over by ``clawhq.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

import clawhq.db.backups  # noqa: F401  (its table in the metadata)
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
