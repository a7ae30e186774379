"""Engine and session factory from a URL; migrations applied on open."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc, make_url
from sqlalchemy.orm import Session, sessionmaker

from common.errors import DatabaseUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True)
class Database:
    engine: Engine
    Session: sessionmaker[Session]

    def close(self) -> None:
        self.engine.dispose()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        engine = create_engine(parsed, pool_pre_ping=True)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError, ValueError) as e:
        raise DatabaseUnavailable(f"cannot use database URL {url!r}: {e}") from e
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_file(Path(parsed.database))
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _private_file(path: Path) -> None:
    """Create a new SQLite file readable and writable by its owner only: it holds the stories and
    the password hashes (SQLite gives its journal and WAL files the same mode). An existing file
    keeps the mode its owner gave it; a missing folder is left for the connection to report."""
    if path.exists() or not path.parent.is_dir():
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return  # made at the same moment by another process: theirs stands
    except OSError as e:
        raise DatabaseUnavailable(f"cannot create the database file {path}: {e.strerror}") from e


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (Alembic).

    On SQLite, foreign keys are switched off while migrating: a migration that rebuilds a table
    (copy, drop, rename) would otherwise fire ON DELETE actions on the drop and lose data.
    They are checked, and switched on again, afterwards."""
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        except CommandError as e:
            raise DatabaseUnavailable(f"cannot migrate database {engine.url.render_as_string(hide_password=True)}: "
                                      f"{e}") from e
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
            if broken:
                raise DatabaseUnavailable(f"the database has {len(broken)} broken references after migrating")


# the errors of a database that went away, refused a connection, or timed out (not bugs in a query)
OUTAGES = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)


def database_reason(error: exc.SQLAlchemyError) -> str:
    """The first line of what the database driver said (not SQLAlchemy's wrapping), at most 300
    characters; "no reason given" when the driver said nothing."""
    said = str(error.orig) if isinstance(error, exc.DBAPIError) and error.orig is not None else str(error)
    lines = said.strip().splitlines()
    return lines[0][:300] if lines and lines[0].strip() else "no reason given"


def unavailable(error: exc.SQLAlchemyError) -> DatabaseUnavailable:
    """A database outage in the middle of an action, as one line for the person. The action's
    transaction rolled back, so its change was not saved."""
    reason = database_reason(error)
    problem = DatabaseUnavailable(f"the database failed ({reason}); this change was not saved. "
                                  "Try again once it is back")
    problem.__cause__ = error
    return problem


def open_database(url: str) -> Database:
    """Connect, migrate, and return the engine with its one sessionmaker."""
    engine = make_engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        migrate(engine)
    except exc.SQLAlchemyError as e:
        engine.dispose()
        raise DatabaseUnavailable(f"cannot open database {shown}: {database_reason(e)}") from e
    return Database(engine, sessionmaker(engine, expire_on_commit=False))
