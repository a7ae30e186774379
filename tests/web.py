"""What the browser tests share: Debian's Chromium through Playwright, the page's common moves,
and the real web app served in this process with the scripted model (a page flow needs the
page and the server, not the language model)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

from generation.backend import Request
from tests.fakes import PARAGRAPHS, ScriptedBackend

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@contextmanager
def chromium():
    """A headless Chromium, closed after; screenshots go to test-artifacts/."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def paragraphs(page) -> int:
    return page.locator("#manuscript p").count()


def wait_paragraphs(page, n: int, timeout: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#manuscript p').length == {n}", timeout=timeout)


def status_says(page, text: str, timeout: int) -> None:
    page.locator("#status").get_by_text(text).wait_for(timeout=timeout)


PREMISE = "A lighthouse keeper on a remote island finds a message in a bottle addressed to her."


def start_story(page, timeout: int, names: tuple[str, str]) -> None:
    """Start a story from the premise, with a screenshot while it streams and one of the opening."""
    page.locator("#premise textarea").fill(PREMISE)
    page.locator("#start").click()
    page.locator("#writing").get_by_text("Writing").first.wait_for(timeout=120_000)
    shot(page, names[0])
    page.locator("#plans input[type=radio]").nth(2).wait_for(timeout=timeout)
    assert paragraphs(page) == 1
    assert page.locator("#short-memory textarea").input_value().strip()
    shot(page, names[1])


def pick_plan(page, number: int) -> str:
    """Click plan `number` (from 0) and return the instruction it put in the box, one of the plans."""
    page.locator("#plans label").nth(number).click()
    page.wait_for_function("document.querySelector('#instruction textarea').value.length > 10")
    plan = page.locator("#instruction textarea").input_value()
    assert plan in page.locator("#plans").inner_text()
    return plan


def inspect_step(page, plan: str) -> str:
    """The inspector's text for the last step, once it shows the step that followed `plan` (not the
    one shown before, nor the queue indicator drawn over it while the new one loads)."""
    tab(page, "Inspect")
    page.locator("#inspect").click()
    page.wait_for_function("(plan) => { const t = document.querySelector('#inspected').innerText;"
                           " return t.includes(plan) && !t.includes('queue:'); }", arg=plan, timeout=30_000)
    return page.locator("#inspected").inner_text()


PARAPHRASES = ["Mara takes the brass key up to the lamp room after the quarrel with Tomas, and they both see "
               "what the key means.",
               "After her quarrel with Tomas, Mara carries the brass key up the tower, and together they find out "
               "what it means."]


class PacedBackend(ScriptedBackend):
    """The scripted model at a human-visible pace (words a few milliseconds apart), so the page
    shows its streaming. Every paragraph it writes is new (the script's paragraphs, each with the
    hour its lamp-room clock strikes), and it writes paraphrases for clarify. `hold(kind, after=n)`
    makes the call of that kind ("paragraph", "paraphrase", or "outline", which starts each auto
    step) after the next n wait until `release()`, so a test can act in the middle of an action."""

    name = "scripted"

    def __init__(self, pause: float = 0.004):
        super().__init__(self.reply)
        self.pause = pause
        self.written = {"paragraph": 0, "paraphrase": 0, "outline": 0}
        self.count = threading.Lock()
        self.hold_at: tuple[str, int] | None = None
        self.held = threading.Event()

    def hold(self, kind: str, after: int = 0) -> None:
        self.held.clear()
        self.hold_at = (kind, self.written[kind] + after + 1)

    def release(self) -> None:
        self.hold_at = None
        self.held.set()

    def reply(self, request: Request) -> str | None:
        asked = request.messages[-1]["content"]
        kind = ("paraphrase" if "Rewrite this instruction" in asked else
                "outline" if "Rewrite the idea as a short outline" in asked else  # one per auto step
                "paragraph" if "paragraph of the story" in asked or "opening paragraph" in asked else None)
        if kind is None:
            return None
        with self.count:
            n = self.written[kind] = self.written[kind] + 1
        if self.hold_at and self.hold_at[0] == kind and n >= self.hold_at[1]:
            self.held.wait(timeout=120)
        if kind == "paraphrase":
            return PARAPHRASES[(n - 1) % len(PARAPHRASES)]
        if kind == "outline":
            return None
        return f"{PARAGRAPHS[(n - 1) % len(PARAGRAPHS)]} The clock in the lamp room struck {n}."

    def generate(self, request: Request):
        for word in super().generate(request):
            time.sleep(self.pause)
            yield word


@contextmanager
def scripted_app(folder: Path, embedder, backend=None, scorer=None, readiness=None):
    """The real page and server (the same FastAPI app behind the same gate as `storyloom serve`,
    run by uvicorn in a thread) on a SQLite file in `folder`, with the scripted model (and
    `readiness`: what the server loads as it starts); yields (url, service)."""
    import uvicorn

    from app.gate import allowed_hosts, web_app
    from app.people import People
    from app.service import StoryService
    from app.ui import build_app
    from generation.recurrence import Writer
    from memory.longterm import LongTermMemory
    from storage.db import open_database, sqlite_url
    from tests.conftest import free_port

    db = open_database(sqlite_url(folder / "storyloom.db"))
    service = StoryService(db, LongTermMemory(embedder, use_gpu=False), Writer(backend or PacedBackend()),
                           scorer=scorer, readiness=readiness)
    blocks = build_app(service, People(service, accounts_on=False), writers=1)
    blocks.queue(default_concurrency_limit=16)
    port = free_port()
    app = web_app(blocks, hosts=allowed_hosts("127.0.0.1", []), origins=frozenset(), ssr_mode=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))  # clients may hold streams open
    thread = threading.Thread(target=server.run, name="scripted-app", daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            assert thread.is_alive(), "the scripted app stopped while starting"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/", service
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        blocks.close()
        db.close()


CHAT = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}")


class TinyScorer:
    """A real causal language model small enough to compute clarify's Integrated Gradients at once:
    two randomly initialised Llama layers over the embedder's word-piece tokenizer, with a plain
    chat template. Its rankings mean nothing; the page shows them as it would the embedded model's."""

    name = "tiny"

    def __init__(self):
        self._lock = threading.Lock()
        self._loaded = None

    def load(self):
        with self._lock:
            if self._loaded is None:
                import torch
                from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

                from memory.embedder import packaged_model_dir

                tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir())
                tokenizer.chat_template = CHAT
                torch.manual_seed(0)
                config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                     max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id)
                self._loaded = (LlamaForCausalLM(config).eval(), tokenizer)
            return self._loaded

    @contextmanager
    def exclusive(self):
        model, tokenizer = self.load()
        with self._lock:
            yield model, tokenizer
