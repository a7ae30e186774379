"""What the loop needs from a model: one request type and two small protocols, one for text (every
backend) and one for gradients (a model in this process, for SCA)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.errors import InvalidInput


def check_lambda(lam: float) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 < lam <= 1:
        raise InvalidInput(f"lambda must be in (0, 1], got {lam}")
    return float(lam)


@dataclass(frozen=True)
class Decoding:
    """The anti-repetition controls of free-text calls: the DITTO adapter (when the backend has
    one), DITTO's decode-time companion (the sentence-repetition guard), transformers'
    repetition_penalty and no_repeat_ngram_size, and DRY."""

    ditto: bool = True  # use the DITTO adapter when one is loaded
    guard: bool = True
    guard_lambda: float = 0.01  # greedy loops hold the copy at p > 0.99: a mild lambda does not break them
    repetition_penalty: float | None = None  # None: each call's own (1.1 for story text)
    no_repeat_ngram_size: int = 0  # 0: off
    dry_multiplier: float = 0.0  # 0: off
    dry_base: float = 1.75
    dry_allowed_length: int = 2

    def check(self) -> "Decoding":
        check_lambda(self.guard_lambda)
        if self.repetition_penalty is not None and not 1.0 <= self.repetition_penalty <= 2.0:
            raise InvalidInput(f"repetition penalty must be in [1, 2], got {self.repetition_penalty}")
        if not 0 <= self.no_repeat_ngram_size <= 10:
            raise InvalidInput(f"no-repeat n-gram size must be 0 (off) to 10, got {self.no_repeat_ngram_size}")
        if not 0 <= self.dry_multiplier <= 5 or not 1 <= self.dry_base <= 4 or not 1 <= self.dry_allowed_length <= 10:
            raise InvalidInput("DRY needs a multiplier in [0, 5], a base in [1, 4] and an allowed length of 1 to 10")
        return self

    @classmethod
    def from_dict(cls, data: dict | None) -> "Decoding":
        """Settings saved with a story; unknown keys (from another version) are ignored."""
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known).check()
        except (TypeError, InvalidInput):
            return cls()


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
    avoid_start: tuple[str, ...] = ()  # words the reply may not begin with (after reply_prefix), where the backend can
    decoding: Decoding | None = None  # anti-repetition controls; None: the backend's plain decoding
    extra: dict = field(default_factory=dict)


class GradientScorer(Protocol):
    """A model in this process whose input gradients can be taken: SCA's Integrated Gradients."""

    name: str

    def exclusive(self) -> AbstractContextManager[tuple[Any, Any]]:
        """The loaded (model, tokenizer), with generation held off inside the block."""
        ...


class Backend(Protocol):
    """A model that writes text. Each backend states what else it can do: `exposes_logits`
    (True: the decoding controls of a Request act on the model's scores: `decoding`, `options`,
    `avoid_start`; False: they are left out), and `gradients` (the backend's model as a
    GradientScorer, or None when it gives text only)."""

    name: str
    exposes_logits: bool

    @property
    def gradients(self) -> GradientScorer | None:
        ...

    def generate(self, request: Request) -> Iterator[str]:
        """Yield the reply in chunks as it is written. Closing the iterator stops generation."""
        ...

    def render(self, request: Request) -> str:
        """The exact prompt text the model reads for this request."""
        ...

    def count_tokens(self, text: str) -> int:
        ...

    def describe(self) -> str:
        """What the backend runs besides its model: the DITTO or pause adapter and whether it is in
        use, or what it cannot do (shown in the Repetition tab and each step's trace)."""
        ...
