import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from storage import repo
from storage.db import open_database, sqlite_url
from storage.errors import Conflict, DatabaseUnavailable, NotFound


def test_migrations_create_the_schema_with_wal_and_foreign_keys(db, tmp_path):
    tables = set(inspect(db.engine).get_table_names())
    assert {"story", "step", "memory_entry", "alembic_version"} <= tables
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"


def test_reopening_a_migrated_database_keeps_its_data(tmp_path):
    url = sqlite_url(tmp_path / "again.db")
    first = open_database(url)
    with first.Session.begin() as s:
        repo.create_story(s, title="Kept", premise="p")
    first.close()
    second = open_database(url)
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


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DatabaseUnavailable, match="cannot open database"):
        open_database(sqlite_url(bogus))
    assert bogus.read_bytes().startswith(b"this is not sqlite")  # left as it was


def test_upgrading_a_database_with_stories_keeps_every_row(tmp_path):
    """Migrations that rebuild a table on SQLite must not fire ON DELETE actions."""
    from storage.db import make_engine, migrate

    url = sqlite_url(tmp_path / "old.db")
    engine = make_engine(url)
    migrate(engine, "0002")  # a database from before the playthrough migration, with data in it
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO story (id, title, premise, outline, genre, language, settings, "
                          "memory_version, created_at, updated_at) VALUES (1, 't', 'p', '', '', 'en', '{}', 1, "
                          "'2026-01-01', '2026-01-01')"))
        for i, parent in ((1, None), (2, 1), (3, 2)):
            conn.execute(text("INSERT INTO step (id, story_id, parent_id, depth, plan, paragraph, short_memory, "
                              "plans, prompt_tokens, completion_tokens, seconds, model, trace, created_at) VALUES "
                              f"({i}, 1, {parent or 'NULL'}, {i - 1}, '', 'p{i}', 'm', '[]', 0, 0, 0, '', '{{}}', "
                              "'2026-01-01')"))
            conn.execute(text("INSERT INTO memory_entry (story_id, step_id, kind, text, pinned, stale, keys, "
                              f"vector, revision, created_at) VALUES (1, {i}, 'paragraph', 'p{i}', 0, 0, '[]', "
                              "x'00', 0, '2026-01-01')"))
        conn.execute(text("UPDATE story SET head_step_id = 3"))
    engine.dispose()
    db = open_database(url)  # migrates to the newest revision
    with db.Session() as s:
        assert s.scalar(text("SELECT count(*) FROM step")) == 3
        assert s.scalar(text("SELECT count(*) FROM memory_entry")) == 3
        assert s.scalar(text("SELECT head_step_id FROM story")) == 3
        assert [x.paragraph for x in repo.path_to(s, 3)] == ["p1", "p2", "p3"]
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.close()
