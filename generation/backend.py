"""What the loop needs from a model: one request type and a small protocol."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Request:
    """One generation: chat messages, an optional start of the reply, and decoding settings."""

    messages: list[dict[str, str]]
    reply_prefix: str = ""  # text the reply is made to start with (not repeated in the output)
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int | None = None
    options: tuple[str, ...] = ()  # when set, the reply is exactly one of these (constrained choice)
    extra: dict = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def generate(self, request: Request) -> Iterator[str]:
        """Yield the reply in chunks as it is written. Closing the iterator stops generation."""
        ...

    def render(self, request: Request) -> str:
        """The exact prompt text the model reads for this request."""
        ...

    def count_tokens(self, text: str) -> int:
        ...
