from datetime import datetime

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from storage import repo
from storage.db import open_database, sqlite_url
from common.errors import Conflict, DatabaseUnavailable, NotFound


def test_migrations_create_the_schema_with_foreign_keys_and_wal_on_sqlite(db):
    inspector = inspect(db.engine)
    assert {"story", "step", "memory_entry", "playthrough", "alembic_version"} <= set(inspector.get_table_names())
    assert {"story", "step"} <= {fk["referred_table"] for fk in inspector.get_foreign_keys("step")}
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0007"
        assert "label" in {column["name"] for column in inspector.get_columns("step")}
        if db.engine.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_reopening_a_migrated_database_keeps_its_data(database_url):
    first = open_database(database_url)
    with first.Session.begin() as s:
        repo.create_story(s, title="Kept", premise="p")
    first.close()
    second = open_database(database_url)  # migrating again is a no-op
    with second.Session() as s:
        assert [x.title for x in repo.list_stories(s)] == ["Kept"]
    second.close()


def _story_with_steps(session, n):
    story = repo.create_story(session, title="T", premise="P")
    parent = None
    for i in range(n):
        parent = repo.add_step(session, story, parent=parent, paragraph=f"p{i}", short_memory=f"m{i}")
    return story, parent


def test_steps_form_a_tree_and_the_head_follows(db):
    with db.Session.begin() as s:
        story, head = _story_with_steps(s, 3)
        assert story.head_step_id == head.id
        assert [x.paragraph for x in repo.path_to(s, head.id)] == ["p0", "p1", "p2"]
        assert [x.depth for x in repo.path_to(s, head.id)] == [0, 1, 2]
        assert repo.path_ids(s, head.parent_id) == {head.parent_id, repo.path_to(s, head.id)[0].id}


def test_adding_under_a_step_that_is_no_longer_the_head_is_a_conflict(db):
    with db.Session.begin() as s:
        story, head = _story_with_steps(s, 2)
        first = repo.path_to(s, head.id)[0]
    with pytest.raises(Conflict):
        with db.Session.begin() as s:
            repo.add_step(s, repo.get_story(s, story.id), parent=first, paragraph="x", short_memory="y")
    with db.Session() as s:
        assert len(repo.path_to(s, repo.get_story(s, story.id).head_step_id)) == 2
        assert s.scalar(text("SELECT count(*) FROM step")) == 2


def test_unknown_story_is_not_found(db):
    with db.Session() as s, pytest.raises(NotFound, match="no story with id 42"):
        repo.get_story(s, 42)


def test_foreign_keys_are_enforced(db):
    with pytest.raises(IntegrityError), db.Session.begin() as s:
        s.execute(text("INSERT INTO step (story_id, depth, plan, paragraph, short_memory, plans, prompt_tokens,"
                       " completion_tokens, seconds, model, trace, created_at) VALUES (999, 0, '', 'p', 'm',"
                       " '[]', 0, 0, 0, '', '{}', '2026-01-01')"))


def test_deleting_a_story_cascades(db):
    with db.Session.begin() as s:
        story, _ = _story_with_steps(s, 2)
        s.delete(story)
    with db.Session() as s:
        assert s.scalar(text("SELECT count(*) FROM step")) == 0


@pytest.mark.parametrize("url", ["sqlite:////nonexistent-dir/x/y.db", "nosuchdb://x", "not a url"])
def test_a_database_that_cannot_be_opened_is_one_clear_error(url):
    with pytest.raises(DatabaseUnavailable, match="cannot"):
        open_database(url)


@pytest.mark.postgres
@pytest.mark.parametrize("change, reason", [
    ({"password": "wrong"}, "password authentication failed"),
    ({"port": 1}, "refused"),  # no server there
    ({"database": "no_such_database"}, 'database "no_such_database" does not exist'),
])
def test_a_postgresql_server_that_refuses_is_one_clear_error_without_the_password(postgres_server, change, reason):
    from sqlalchemy import make_url

    from tests.conftest import POSTGRES

    url = make_url(POSTGRES).set(**change)
    with pytest.raises(DatabaseUnavailable, match="cannot open database") as refused:
        open_database(url.render_as_string(hide_password=False))
    assert reason in str(refused.value)
    assert f":{url.password}@" not in str(refused.value) and ":***@" in str(refused.value)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DatabaseUnavailable, match="cannot open database"):
        open_database(sqlite_url(bogus))
    assert bogus.read_bytes().startswith(b"this is not sqlite")  # left as it was


def test_upgrading_a_database_with_stories_keeps_every_row(database_url):
    """Migrations keep every row; on SQLite, the ones that rebuild a table must not fire ON DELETE
    actions."""
    from storage.db import make_engine, migrate

    engine = make_engine(database_url)
    migrate(engine, "0002")  # a database from before the playthrough migration, with data in it
    when = datetime(2026, 1, 1)
    with engine.begin() as conn:  # ids from the database, as the app made them
        conn.execute(text("INSERT INTO story (title, premise, outline, genre, language, settings, memory_version, "
                          "created_at, updated_at) VALUES ('t', 'p', '', '', 'en', '{}', 1, :when, :when)"),
                     {"when": when})
        story = conn.execute(text("SELECT max(id) FROM story")).scalar()
        parent = None
        for i in (1, 2, 3):
            conn.execute(text("INSERT INTO step (story_id, parent_id, depth, plan, paragraph, short_memory, plans, "
                              "prompt_tokens, completion_tokens, seconds, model, trace, created_at) VALUES "
                              "(:story, :parent, :depth, '', :paragraph, 'm', '[]', 0, 0, 0, '', '{}', :when)"),
                         {"story": story, "parent": parent, "depth": i - 1, "paragraph": f"p{i}", "when": when})
            parent = conn.execute(text("SELECT max(id) FROM step")).scalar()
            conn.execute(text("INSERT INTO memory_entry (story_id, step_id, kind, text, pinned, stale, keys, "
                              "vector, revision, created_at) VALUES (:story, :step, 'paragraph', :text, :no, :no, "
                              "'[]', :vector, 0, :when)"),
                         {"story": story, "step": parent, "text": f"p{i}", "no": False, "vector": b"\x00",
                          "when": when})
        conn.execute(text("UPDATE story SET head_step_id = :head"), {"head": parent})
    engine.dispose()
    db = open_database(database_url)  # migrates to the newest revision
    with db.Session() as s:
        assert s.scalar(text("SELECT count(*) FROM step")) == 3
        assert s.scalar(text("SELECT count(*) FROM memory_entry")) == 3
        assert s.scalar(text("SELECT head_step_id FROM story")) == parent
        assert [x.paragraph for x in repo.path_to(s, parent)] == ["p1", "p2", "p3"]
    with db.Session.begin() as s:  # new rows get new ids after the old ones
        added = repo.add_step(s, repo.get_story(s, story), parent=repo.get_step(s, parent), paragraph="p4",
                              short_memory="m")
        s.flush()
        assert added.id > parent
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.close()


def test_a_new_sqlite_database_and_its_data_folder_are_their_owners_only(tmp_path):
    """They hold every story and the password hashes; the test process's umask would give 0644."""
    import stat

    from tests.conftest import storyloom_here

    database = open_database(sqlite_url(tmp_path / "new.db"))
    with database.Session.begin() as session:
        repo.create_story(session, title="T", premise="P")  # writes the WAL too
    try:
        for name in ("new.db", "new.db-wal"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        database.close()
    status, _, err = storyloom_here(tmp_path / "data", "list")
    assert status == 0, err
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data" / "storyloom.db").stat().st_mode) == 0o600
