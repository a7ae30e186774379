"""Persistence: SQLAlchemy models, the engine/session factory, migrations, repository functions.

Knows nothing of models, embeddings or UI."""
