from __future__ import annotations

import pytest

from memory.embedder import Embedder
from storage.db import open_database, sqlite_url


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real packaged MiniLM, loaded once for the whole run."""
    return Embedder()


@pytest.fixture
def db(tmp_path):
    database = open_database(sqlite_url(tmp_path / "test.db"))
    yield database
    database.close()
