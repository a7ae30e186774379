"""A scripted backend for unit tests of loop logic: replies chosen by what the prompt asks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from generation.backend import Request

PARAGRAPH = ("Mara climbed the spiral stairs of the lighthouse with the letter pressed against her chest. "
             "The lamp room smelled of oil and salt, and the glass rattled in the wind. She unfolded the page "
             "again under the lantern and read the date, fifty years ahead, in her own careful handwriting. "
             "Below, the sea threw itself at the rocks as if it wanted to reach her. She sat on the iron floor, "
             "counted her breaths, and decided that she would answer the letter before the night was over.")


def scripted_reply(request: Request) -> str:
    """A well-formed reply for each focused call, recognised by its instruction."""
    asked = request.messages[-1]["content"]
    if "short title" in asked:
        return "The Keeper's Letter"
    if "outline" in asked:
        return " a keeper finds a letter. A storm cuts the island off. She saves the ship."
    if "paragraph of the story" in asked or "opening paragraph" in asked:
        return PARAGRAPH
    if "Rewrite the summary" in asked:
        return "Mara, a lighthouse keeper, found a letter from the future and decided to answer it."
    if "What happens next" in asked:
        return " Mara rows out to the reef at dawn to look for the ship named in the letter."
    raise AssertionError(f"unexpected prompt: {asked[:200]}")


class ScriptedBackend:
    """Replies from `reply(request)` (or a queue of strings), streamed word by word. Records requests."""

    name = "scripted"

    def __init__(self, reply: Callable[[Request], str] | list[str] = scripted_reply):
        self.reply = reply
        self.requests: list[Request] = []

    def generate(self, request: Request) -> Iterator[str]:
        self.requests.append(request)
        text = self.reply.pop(0) if isinstance(self.reply, list) else self.reply(request)
        for word in text.split(" "):
            yield word + " "

    def render(self, request: Request) -> str:
        return "\n".join(f"<{m['role']}> {m['content']}" for m in request.messages) + "\n<assistant> " + \
            request.reply_prefix

    def count_tokens(self, text: str) -> int:
        return len(text.split())
