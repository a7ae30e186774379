"""A scripted backend for unit tests of loop logic: replies chosen by what the prompt asks."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from generation.backend import Request

PARAGRAPH = ("Mara climbed the spiral stairs of the lighthouse with the letter pressed against her chest. "
             "The lamp room smelled of oil and salt, and the glass rattled in the wind. She unfolded the page "
             "again under the lantern and read the date, fifty years ahead, in her own careful handwriting. "
             "Below, the sea threw itself at the rocks as if it wanted to reach her. She sat on the iron floor, "
             "counted her breaths, and decided that she would answer the letter before the night was over.")


PARAGRAPHS = [
    PARAGRAPH,
    ("At dawn the storm had blown itself out, and the harbour below the cliffs lay flat and grey. Mara dragged "
     "the dinghy over the shingle, checked the oars twice, and pushed off toward the reef where the Kestrel had "
     "sunk years ago. Gulls wheeled above her. Every stroke took her farther from the island than she had been "
     "in a decade, and the letter, folded in her oilskin pocket, seemed to grow heavier with each pull."),
    ("Tomas was waiting on the quay when she came in, his apron still white with flour. He did not ask where "
     "she had been. He simply took the rope, tied it off with hands that had done it ten thousand times, and "
     "told her that a stranger had come to the village asking for the keeper of Greyhaven by name. The man "
     "had paid in coins that nobody recognised, Tomas said, minted in a year that had not yet come."),
]

CHOICES = [" climb to the lamp room and light the lamp.", " row across to the village.", " burn the letter in the stove."]

PLANS = [" Mara rows out to the reef at dawn to look for the ship named in the letter.",
         " A winter storm cuts the island off and the great lamp fails.",
         " Tomas the baker arrives by boat with news from the village."]


def scripted_reply(request: Request, plan_number: int = 0, paragraph_number: int = 0) -> str:
    """A well-formed reply for each focused call, recognised by its instruction."""
    asked = request.messages[-1]["content"]
    if "Reply exactly in this format" in asked:
        return (f"Output Paragraph:\n{PARAGRAPHS[paragraph_number % len(PARAGRAPHS)]}\n\nOutput Memory:\n"
                "Rationale: the trip to the reef matters later.\nUpdated Memory: Mara found a letter from the "
                "future and rowed to the reef to find the ship it names.\n\nOutput Instruction:\n"
                + "".join(f"Instruction {n}: {p.strip()}\n" for n, p in enumerate(PLANS, 1)))
    if "What could the main character do next" in asked:
        return CHOICES[plan_number % len(CHOICES)]
    if "What happens next" in asked:
        return PLANS[plan_number % len(PLANS)]
    if "Answer with its number only" in asked:
        return " 2."
    if "Rewrite the idea as a short outline" in asked:
        return "Mara waits for the storm in the lamp room. The lamp fails at midnight and she climbs up to fix it."
    if "short title" in asked:
        return "The Keeper's Letter"
    if "Write an outline" in asked:
        return " a keeper finds a letter. A storm cuts the island off. She saves the ship."
    if "paragraph of the story" in asked or "opening paragraph" in asked:
        return PARAGRAPHS[paragraph_number % len(PARAGRAPHS)]
    if "Rewrite the summary" in asked:
        return "Mara, a lighthouse keeper, found a letter from the future and decided to answer it."
    raise AssertionError(f"unexpected prompt: {asked[:200]}")


class ScriptedBackend:
    """Replies streamed word by word: `override(request)` when it returns text, else the script.
    Records every request. Text only, as a served model: no logits, no gradients."""

    name = "scripted"
    exposes_logits = False
    gradients = None

    def __init__(self, override: Callable[[Request], str | None] | None = None):
        self.override = override
        self.requests: list[Request] = []

    def generate(self, request: Request) -> Iterator[str]:
        self.requests.append(request)
        text = self.override(request) if self.override else None
        if text is None:
            asked = [r.messages[-1]["content"] for r in self.requests]
            plans = sum("What happens next" in a or "What could the main character" in a for a in asked)
            paragraphs = sum("paragraph of the story" in a or "opening paragraph" in a or "exactly in this format" in a
                             for a in asked)
            text = scripted_reply(request, plans - 1, paragraphs - 1)
        for word in text.split(" "):
            yield word + " "

    def render(self, request: Request) -> str:
        return "\n".join(f"<{m['role']}> {m['content']}" for m in request.messages) + "\n<assistant> " + \
            request.reply_prefix

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def describe(self) -> str:
        return "scripted replies: this backend has no DITTO adapter"


class QuietServer(ThreadingHTTPServer):
    """A test HTTP server that keeps what went wrong in its handlers (`dropped`) instead of
    printing it: a client that hangs up mid-reply, as the timeout tests make them, would otherwise
    print a traceback into whatever stderr a later test is reading."""

    daemon_threads = True

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.dropped: list[BaseException | None] = []

    def handle_error(self, request, client_address):
        self.dropped.append(sys.exc_info()[1])


@contextmanager
def scripted_server() -> Iterator[str]:
    """The script behind an OpenAI-compatible chat API in this process, as `storyloom` meets a
    served model (STORYLOOM_BACKEND=openai); yields the API's base URL."""
    script = ScriptedBackend()

    class Answer(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            return

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            words = list(script.generate(Request(messages=body["messages"])))
            for n, word in enumerate(words):
                chunk = {"id": "scripted", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "delta": {"content": word},
                                      "finish_reason": "stop" if n == len(words) - 1 else None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    server = QuietServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="scripted-server",
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
