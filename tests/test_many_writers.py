"""Many writers at once through the web app's HTTP API (gradio_client), each in their own session
with their own story: no cross-talk, no lost or duplicated step, everyone answered, and the
model's calls one at a time: 20 writers with a scripted model behind the real server (in this
process). Two people on `storyloom serve` with the embedded model, one in the browser and one
through the API, are in test_browser_model.py."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gradio_client import Client

from app.people import People
from app.service import StoryService
from app.ui import build_app
from generation.backend import Request
from generation.engine import Turns
from generation.recurrence import Writer
from memory.longterm import LongTermMemory
from storage import repo
from storage.db import open_database, sqlite_url
from tests.conftest import free_port
from tests.fakes import PARAGRAPHS, ScriptedBackend
from tests.test_web_accounts import page

MARK = re.compile(r"\bwriter-(\d+)\b")


class OneAtATime(ScriptedBackend):
    """The scripted model behind the real backend's lock, slow enough for calls to overlap. Every
    paragraph and summary carries the writer marks it saw in its prompt, so a prompt that mixed
    two stories shows in the manuscript. Counts how many calls ever ran at once."""

    def __init__(self):
        super().__init__(self.marked)
        self.turns = Turns()
        self.running = 0
        self.most_at_once = 0
        self.paragraphs: dict[str, int] = {}
        self.count = threading.Lock()

    def marked(self, request: Request) -> str | None:
        prompt = " ".join(m["content"] for m in request.messages)
        marks = " ".join(f"writer-{n}" for n in sorted(set(MARK.findall(prompt)), key=int))
        asked = request.messages[-1]["content"]
        if "paragraph of the story" in asked or "opening paragraph" in asked:
            with self.count:
                n = self.paragraphs[marks] = self.paragraphs.get(marks, -1) + 1
            return f"{PARAGRAPHS[n % len(PARAGRAPHS)]} The keeper here is {marks}."
        if "Rewrite the summary" in asked:
            return f"The keeper {marks} found a letter from the future and decided to answer it."
        return None

    def generate(self, request: Request):
        with self.turns:
            with self.count:
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            try:
                for word in super().generate(request):
                    time.sleep(0.0005)
                    yield word
            finally:
                with self.count:
                    self.running -= 1


def steps_of(db, story_id: int) -> list[str]:
    with db.Session() as session:
        story = repo.get_story(session, story_id, repo.ANYONE)
        return [s.paragraph for s in repo.path_to(session, story.head_step_id)]


def test_twenty_writers_step_their_own_stories_at_once(tmp_path, embedder):
    db = open_database(sqlite_url(tmp_path / "many.db"))
    backend = OneAtATime()
    service = StoryService(db, LongTermMemory(embedder, use_gpu=False), Writer(backend))
    app = build_app(service, People(service, accounts_on=False), writers=4)
    app.queue(default_concurrency_limit=16).launch(server_port=free_port(), prevent_thread_lock=True,
                                                  ssr_mode=False, quiet=True)
    try:
        url = app.local_url

        def write(n: int) -> tuple[int, str, str]:
            me = Client(url, verbose=False)  # a session of its own, as a browser tab has
            opened = page(me.predict(f"A keeper, writer-{n}, finds a letter from the future.", "",
                                     api_name="/start"))
            stepped = page(me.predict(1, "", api_name="/step"))
            return opened["stories"]["value"], opened["status"], stepped

        with ThreadPoolExecutor(20) as pool:
            jobs = [pool.submit(write, n) for n in range(20)]
            time.sleep(1.0)  # the model's queue is full now; the rest of the page must not wait on it
            reader = Client(url, verbose=False)
            listed = reader.predict(api_name="/list_own_stories")
            waiting = sum(not job.done() for job in jobs)
            results = [job.result(timeout=600) for job in jobs]

        assert waiting > 0, "the story list was answered only after every step (it waited behind the model)"
        assert isinstance(listed["choices"], list)
        story_ids = [story_id for story_id, _, _ in results]
        assert len(set(story_ids)) == 20  # one story each
        for n, (story_id, _, stepped) in enumerate(results):
            assert "Paragraph 2 written" in stepped["status"], stepped["status"]
            assert set(MARK.findall(stepped["manuscript"])) == {str(n)}, f"writer {n} sees another's text"
            paragraphs = steps_of(db, story_id)
            assert len(paragraphs) == 2, f"writer {n}'s story has {len(paragraphs)} paragraphs, not 2"
            assert all(f"writer-{n}." in p for p in paragraphs)
        assert backend.most_at_once == 1  # the model's calls took turns
    finally:
        app.close()
        db.close()
