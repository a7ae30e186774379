"""Whether the models a step needs are loaded: `storyloom serve` starts loading them in the
background as it starts, so that the first writer does not pay for it, and the page says where that
stands ("loading the model … 12 s", then "ready, loaded in 17.2 s"). Where nothing started it (the
CLI, tests), each model still loads on its first use, as before."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("storyloom.readiness")

IDLE, LOADING, READY, FAILED = "idle", "loading", "ready", "failed"


@dataclass(frozen=True)
class State:
    state: str  # IDLE (nothing started: models load on first use), LOADING, READY or FAILED
    seconds: float  # loading so far, or what it took
    part: str = ""  # what is loading now
    error: str = ""  # why it failed

    @property
    def line(self) -> str:
        """One line for the page."""
        if self.state == LOADING:
            return f"Loading {self.part} … {self.seconds:.0f} s"
        if self.state == READY:
            return f"Model ready (loaded in {self.seconds:.1f} s)"
        if self.state == FAILED:
            return f"The model failed to load: {self.error}. Each step will try again."
        return "The model loads with the first step."


class Readiness:
    """`parts`: (what, load) pairs, loaded in order on one background thread by `start()`. Each
    load must be safe to call again (the models' own loaders are: they load once, under a lock),
    so a step that arrives while loading simply waits for the same load."""

    def __init__(self, parts: Sequence[tuple[str, Callable[[], object]]] = ()):
        self.parts = list(parts)
        self._lock = threading.Lock()
        self._started: float | None = None
        self._ended: float | None = None
        self._part = ""
        self._error = ""

    def start(self) -> None:
        """Start loading (once); returns at once."""
        with self._lock:
            if self._started is not None:
                return
            self._started = time.monotonic()
        threading.Thread(target=self._load, name="storyloom-preload", daemon=True).start()

    def _load(self) -> None:
        try:
            for part, load in self.parts:
                with self._lock:
                    self._part = part
                load()
        except Exception as e:  # the server stays up: a step tries again, and says why it failed
            log.exception("loading %s failed", self._part)
            with self._lock:
                self._error = f"{type(e).__name__}: {e}"
        with self._lock:
            self._ended = time.monotonic()
        if not self._error:
            log.info("models ready in %.1f s", self._ended - self._started)

    def state(self) -> State:
        with self._lock:
            if self._started is None:
                return State(IDLE, 0.0)
            if self._ended is None:
                return State(LOADING, time.monotonic() - self._started, self._part)
            if self._error:
                return State(FAILED, self._ended - self._started, self._part, self._error)
            return State(READY, self._ended - self._started)

    def waiting(self) -> str | None:
        """What a step asked for now waits on, as a line for the page; None when it waits on nothing."""
        now = self.state()
        return now.line if now.state == LOADING else None


class Pace:
    """How long this machine's recent actions of each kind took ("step", "start"), for the page's
    estimate of the time left: the median of the last `keep`, or None before the first."""

    def __init__(self, keep: int = 5):
        self.keep = keep
        self._lock = threading.Lock()
        self._recent: dict[str, list[float]] = {}

    def add(self, kind: str, seconds: float) -> None:
        with self._lock:
            self._recent[kind] = [*self._recent.get(kind, []), seconds][-self.keep:]

    def expected(self, kind: str) -> float | None:
        with self._lock:
            recent = sorted(self._recent.get(kind, []))
        return recent[len(recent) // 2] if recent else None
