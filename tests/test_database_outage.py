"""A PostgreSQL database that goes away in the middle of a step: the step fails with one clear
line, nothing of it is saved, the written paragraph stays on screen, and once the database is
back the story goes on. Real PostgreSQL server, real embedder and FAISS, scripted model."""

from __future__ import annotations

import uuid

import gradio as gr
import pytest
from sqlalchemy import make_url, text

from app.people import People
from app.service import StoryService
from app.ui.page import Problem, stream
from generation.recurrence import Writer
from memory.longterm import LongTermMemory
from storage.db import open_database
from tests.conftest import POSTGRES
from tests.fakes import PARAGRAPHS, ScriptedBackend
from tests.test_service import counts

pytestmark = pytest.mark.postgres


@pytest.fixture
def outage(postgres_server):
    """A fresh database, and a switch that shuts it to every connection (and cuts the open ones)."""
    name = f"storyloom_outage_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def switch(up: bool) -> None:
        with postgres_server.connect() as c:
            c.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(up).lower()}'))
            if not up:
                c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})

    yield make_url(POSTGRES).set(database=name).render_as_string(hide_password=False), switch
    switch(True)
    with postgres_server.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_a_step_whose_database_goes_away_saves_nothing_and_keeps_the_text(outage, embedder):
    url, switch = outage
    db = open_database(url)
    armed = []

    def cut_while_writing(request):
        if armed and "paragraph of the story" in request.messages[-1]["content"]:
            armed.clear()
            switch(False)  # the database goes away while the model writes
        return None

    service = StoryService(db, LongTermMemory(embedder, use_gpu=False), Writer(ScriptedBackend(cut_while_writing)))
    story = service.new_story("A keeper finds a letter from the future.")
    before = counts(db)
    armed.append(True)
    *_, outcome = stream(service.step, story.id, 1)
    assert isinstance(outcome, Problem)
    assert outcome.startswith("the database failed (")
    assert outcome.endswith("this change was not saved. Try again once it is back")
    assert outcome.draft.strip() in [p.strip() for p in PARAGRAPHS]  # what the model wrote, whole

    def view(desk, story_id):
        return desk.view(story_id)

    event = People(service, accounts_on=False).handler(view)
    with pytest.raises(gr.Error, match="the database failed"):  # any other action says the same
        event(story.id, None)

    switch(True)
    assert counts(db) == before  # nothing of the failed step was saved
    assert len(service.view(story.id).paragraphs) == 1
    assert len(service.step(story.id, plan=1).paragraphs) == 2  # back: the story goes on
    db.close()
