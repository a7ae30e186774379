from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from memory.embedder import Embedder
from storage.db import open_database, sqlite_url

# The PostgreSQL server `make test` starts (Debian's cluster, a role made for the tests); a
# database is created for each test and dropped after it.
POSTGRES = (os.environ.get("STORYLOOM_TEST_POSTGRES")
            or "postgresql+psycopg://storyloom:storyloom@127.0.0.1:5432/postgres")
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXE = str(Path(sys.executable).with_name("storyloom"))

# The texts the tests train and measure on, shipped in the repository with their licences
TEXTS = Path(__file__).resolve().parent.parent / "assets" / "texts"


def storyloom_here(data: Path, *args: str, stdin: str | bytes = "", **env: str) -> tuple[int, str, str]:
    """The `storyloom` command run in this process (its exit status, stdout, stderr), with its
    own data directory, `stdin` as its input, and the given STORYLOOM_ settings, none of this shell's."""
    from app.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as settings, redirect_stdout(out), redirect_stderr(err):
        for name in [k for k in os.environ if k.startswith("STORYLOOM_")]:
            settings.delenv(name)
        settings.setenv("STORYLOOM_DATA_DIR", str(data))
        for name, value in env.items():
            settings.setenv(name, value)
        settings.setattr(sys, "stdin", io.StringIO(stdin) if isinstance(stdin, str)
                         else io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


def storyloom_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment for a `storyloom` process: none of this shell's STORYLOOM_ settings, its own
    data directory, and the given settings (auth="true" becomes STORYLOOM_AUTH=true). A server
    loads the model as it starts only when asked (preload="true"): most tests never use it, and
    its loading would take their server's time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORYLOOM_")}
    env["STORYLOOM_DATA_DIR"] = str(data_dir)
    env["STORYLOOM_PRELOAD"] = "false"
    env.update({f"STORYLOOM_{k.upper()}": v for k, v in settings.items()})
    return env


@contextmanager
def running_app(env: dict[str, str], log_path: Path, *args: str):
    """`storyloom serve` on a free port, started and waited for; yields its URL and stops it after."""
    port = free_port()
    with open(log_path, "w+") as log:
        process = subprocess.Popen([EXE, "serve", "--port", str(port), *args], env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    assert process.poll() is None, log_path.read_text()
                    time.sleep(0.5)
            else:
                pytest.fail("the app did not start: " + log_path.read_text())
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="session")
def accounts_folder(tmp_path_factory) -> Path:
    """The data folder of `accounts_server`, with the users of tests/test_web_accounts.py."""
    from tests.test_web_accounts import add_users

    data = tmp_path_factory.mktemp("accounts")
    add_users(data)
    return data


@pytest.fixture(scope="session")
def accounts_server(accounts_folder) -> str:
    """`storyloom serve` with accounts on and the users of tests/test_web_accounts.py, answering
    to novels.example too and allowing the pages of https://friend.example; its URL. Shared by
    the HTTP and the browser tests of logging in, and the tests of hosts and origins."""
    data = accounts_folder
    env = storyloom_env(data, auth="true", allowed_hosts="novels.example", allowed_origins="https://friend.example")
    with running_app(env, data / "serve.log") as url:
        yield url


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real packaged MiniLM, loaded once for the whole run."""
    return Embedder()


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory) -> Path:
    """The embedded model, read once from its GGUF (about 20 s: the weights are dequantized) and
    written as a plain folder that loads in a fraction of a second, with the same weights and
    tokenizer. In-process model tests load it, each their own copy; the GGUF path itself is
    tested by test_local_backend.py and by every test that runs `storyloom`."""
    from generation.local import embedded_model, load_model, save_folder

    model, tokenizer = load_model(embedded_model(), "cpu")
    return save_folder(model, tokenizer, tmp_path_factory.mktemp("model") / "smollm2")


@pytest.fixture(scope="session")
def story_backup(tmp_path_factory, embedder) -> Path:
    return write_story_backup(tmp_path_factory.mktemp("backup"), embedder)


def write_story_backup(folder: Path, embedder: Embedder) -> Path:
    """A JSON backup of a two-paragraph story, written by the service with the scripted model:
    a story to import into a running app without a model call."""
    from tests.test_service import make_service

    db = open_database(sqlite_url(folder / "source.db"))
    try:
        service, _ = make_service(db, embedder)
        view = service.step(service.new_story("A keeper finds a letter from the future.").id, plan=1)
        path = folder / "keeper.json"
        path.write_bytes(service.manuscripts.export(view.id, "json").data)
    finally:
        db.close()
    return path


@pytest.fixture(scope="session")
def postgres_server():
    """An engine on the test server's maintenance database, for creating and dropping databases."""
    from sqlalchemy import create_engine, exc, text

    engine = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except exc.SQLAlchemyError as e:
        engine.dispose()
        pytest.fail(f"no PostgreSQL server at {engine.url.render_as_string(hide_password=True)} "
                    f"({str(getattr(e, 'orig', e)).strip().splitlines()[0]}): `make test` starts one "
                    "(`make postgres`); or set STORYLOOM_TEST_POSTGRES, or deselect with -m 'not postgres'")
    yield engine
    engine.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path):
    """A URL to an empty database: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "test.db")
        return
    from sqlalchemy import make_url, text

    server = request.getfixturevalue("postgres_server")
    name = f"storyloom_test_{uuid.uuid4().hex[:12]}"
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    drop_database(server, name)


def drop_database(server, name: str, tries: int = 10) -> None:
    """DROP DATABASE … WITH (FORCE). An autovacuum worker on it is not ours to end (PostgreSQL
    says "must be a member of … pg_signal_backend"); it is done within moments, so try again."""
    from sqlalchemy import exc, text

    for attempt in range(1, tries + 1):
        try:
            with server.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except exc.ProgrammingError as e:
            if "pg_signal_backend" not in str(e) or attempt == tries:
                raise
            time.sleep(0.5)


@pytest.fixture
def db(database_url):
    database = open_database(database_url)
    yield database
    database.close()
