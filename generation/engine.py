"""One model, many generations at once: a decoding loop that runs every active request as a row
of one batch (continuous batching). Requests join at the next step after they arrive and leave
as soon as they finish or their reader stops reading; the others go on.

Each row keeps what it would have alone: its own token history (the logits processors see the
row's real tokens, never the padding), its processors, its sampling (temperature, top-k, top-p, and a
generator of its own when seeded), its stop tokens and lengths. Rows are left-padded in the
shared key/value cache, with the attention mask and per-row positions set. Each prompt is read
in a forward of its own, and with int8 weights a step attends row by row over each row's own
keys (row_attention), so a row computes what it computes alone but for float rounding in the
last bits, which greedy decoding does not feel: it gives the same tokens in a batch as alone, in
float32 and in int8 alike (tests/test_engine.py).

On a CPU a decoding step runs on one thread: a step's matrices are thin (a row per request),
bound by reading the weights, and OpenMP's hand-offs between two threads cost more than they
share out (measured on 2 cores: float32 decodes as fast on one thread as on two, int8 a third
faster on one). A prompt's reading is a wide product, bound by arithmetic: with nothing
decoding it runs on every thread, which nearly halves it; while rows decode it runs on a thread
of its own beside them, so neither waits for the other. A step over many cached tokens
(WIDE_STEPS, all rows together) is wide again: attending over them is work two threads share
(through the backend at 16 rows of 60 to 800 tokens, 55 to 56 tokens a second against 52; at 8
rows and at one, no change). Threads are set per thread (OpenMP's own setting), so the rest of
the process keeps its own.

Admission is first come, first served: a request waits only while the batch is full, and a
request that needs the other weights (DITTO off, `plain`) stops admission until the batch has
drained, so it cannot be passed over for ever.

This module knows tensors and token ids only; the backend (generation/local.py) turns requests
into jobs and tokens into text."""

from __future__ import annotations

import atexit
import inspect
import logging
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from generation import cache as kv

log = logging.getLogger("storyloom.engine")

END = object()  # what a job's queue holds after its last token
NUCLEUS = 256  # top-p looks among this many likeliest tokens first (the whole vocabulary if they fall short)


WIDE_STEPS = 4000  # a CPU step over at least this many cached tokens (all rows together) uses every thread
ROW_ATTENTION = "storyloom-rows"  # the attention implementation of an engine that decodes by rows


def row_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention for a decoding step, computed row by row over each row's own keys (its left
    padding cut off), as transformers' SDPA computes it for that row alone. A row's numbers then
    never depend on its batch-mates': with masked attention over the padded width, the sums' order
    changes with the padding, and int8 activations (generation/weights.py) turn those last-bit
    differences into other tokens (in a probe, 74 of 96 greedy rows that joined batches at
    various steps differed from the same rows alone; none with this). Anything else (prefill,
    padding that is not at the left) goes to SDPA as it is."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None or query.shape[2] != 1 or attention_mask.dtype != torch.bool:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    seen = attention_mask[:, 0, -1, :]  # [rows, keys]: the keys each row reads
    starts = (~seen).sum(-1)
    if not torch.equal(seen, torch.arange(seen.shape[-1], device=seen.device) >= starts[:, None]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows = [sdpa_attention_forward(module, query[b:b + 1], key[b:b + 1, :, s:], value[b:b + 1, :, s:], None,
                                   **kwargs)[0] for b, s in enumerate(starts.tolist())]
    return torch.cat(rows), None


def decode_by_rows(model) -> None:
    """`model` attends with row_attention from now on (registered with transformers once)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if ROW_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ROW_ATTENTION, row_attention)
        AttentionMaskInterface.register(ROW_ATTENTION, sdpa_mask)  # the masks SDPA gets
    if model.config._attn_implementation != ROW_ATTENTION:
        model.set_attn_implementation(ROW_ATTENTION)


def _close(ref: "weakref.ref[Engine]") -> None:
    engine = ref()
    if engine is not None:
        engine.close()


class Turns:
    """A lock that serves its waiters in the order they came (threading.Lock does not), so that
    whoever waits for the model (a writer's call, SCA's gradient work, the engine's next step)
    gets it in turn: nothing can starve the others."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    def __enter__(self) -> "Turns":
        with self._mutex:
            if not self._held:
                self._held = True
                return self
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the holder hands the lock straight to the first waiter
        return self

    @property
    def waiting(self) -> int:
        """How many callers wait in line for the lock."""
        with self._mutex:
            return len(self._waiting)

    def __exit__(self, *exc) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False


@dataclass
class Job:
    """One generation: a prompt's token ids and how to continue it."""

    prompt: list[int]
    max_new_tokens: int
    min_new_tokens: int = 0
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    processors: list = field(default_factory=list)  # LogitsProcessors, called with this row's ids only
    stop_ids: frozenset[int] = frozenset()
    suppress_ids: tuple[int, ...] = ()
    plain: bool = False  # needs the base weights (the adapter taken out)
    top_k: int = 0  # 0: off; sampling keeps the top_k likeliest tokens, then applies top_p to them
    # filled in by the engine
    tokens: list[int] = field(default_factory=list)
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generator: object = None


class Engine:
    """The decoding loop over `model`, in a thread of its own started on the first submit.
    `weights(plain)` gives the model to decode with: the base weights (plain=True) or the loaded
    ones back; it is called when the batch changes from one to the other. `max_batch` rows at most run
    together. `turn` is held for each step (and for a prompt's reading beside the batch, with the steps
    run meanwhile, a second or two): holding it (SCA's gradient work) holds decoding.
    `by_rows`: steps attend row by row (row_attention), for int8 weights, which amplify rounding;
    float32's rounding differences stay in the last bits, which greedy decoding does not feel (96
    of 96 rows in the probe above alike without it), and the per-row calls cost 8 to 10% of a step
    at 8 to 16 rows over 600-token prompts; on a GPU, bfloat16 rounds by batch size anyway.
    `wide_steps`: on a CPU, a step over at least this many cached tokens (all rows together) uses every
    thread; None: never."""

    def __init__(self, model, max_batch: int = 8, weights: Callable[[bool], object] | None = None,
                 turn: Turns | None = None, by_rows: bool = False, wide_steps: int | None = WIDE_STEPS):
        import torch

        self.model = model
        # (prefill, step) threads on a CPU; the process's own setting for both elsewhere
        wide = torch.get_num_threads()
        self._threads = (wide, 1) if model.device.type == "cpu" else (wide, wide)
        self._wide_steps = wide_steps if model.device.type == "cpu" else None
        self._alongside = model.device.type == "cpu"  # prompts read on a thread of their own while the batch steps
        self._reader = None  # that thread (a one-worker pool), made when first needed
        # a prompt's reading computes the scores of its last position only, where the model can (the
        # output head over every position of a 700-token prompt is a fifth of reading it)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        keeps = "logits_to_keep" in inspect.signature(base.forward).parameters
        self._last_only = {"logits_to_keep": 1} if keeps else {}
        self._by_rows = by_rows
        if by_rows:
            decode_by_rows(model)
        self.max_batch = max_batch
        self.weights = weights
        self.turn = turn or Turns()
        self._applied = False  # the weights decoding now: plain or not
        self._running = model  # the model decoding now
        self._pending: deque[Job] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        # the batch: its jobs, in row order, the shared cache, its attention mask
        self._rows: list[Job] = []
        self._cache = None
        self._mask = None
        self._plain = False

    # -- the callers' side ---------------------------------------------------------------------

    def submit(self, job: Job, timeout: float | None = None) -> Iterator[int]:
        """The job's new tokens as they come. Closing the iterator (or leaving it) stops the job's
        row; an error in decoding is raised here, and TimeoutError when no token came for
        `timeout` seconds (the row is stopped)."""
        import torch

        if job.seed is not None:
            job.generator = torch.Generator(device=self.model.device).manual_seed(job.seed)
        with self._wake:
            if self._closed:
                raise RuntimeError("the model engine is closed")
            self._pending.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="storyloom-engine", daemon=True)
                self._thread.start()
                atexit.register(_close, weakref.ref(self))
            self._wake.notify()
        return self._read(job, timeout)

    @staticmethod
    def _read(job: Job, timeout: float | None) -> Iterator[int]:
        try:
            while True:
                try:
                    item = job.out.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError(f"no token for {timeout:.0f} s") from None
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the loop and wait for its thread to end: rows still decoding and requests still
        waiting get an error. Called at the interpreter's exit: a decoding thread still alive in
        torch when the interpreter finalizes can abort the process (exit status 134, "terminate
        called without an active exception") after all its work is done."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def load(self) -> tuple[int, int]:
        """(rows decoding now, requests waiting to join)."""
        with self._wake:
            return len(self._rows), len(self._pending)

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        torch.set_num_threads(self._threads[1])  # this thread's setting (OpenMP's is per thread)
        while True:
            with self._wake:
                while not self._pending and not self._rows and not self._closed:
                    self._wake.wait()
                if self._closed:
                    self._fail([*self._rows, *self._pending], RuntimeError("the model engine closed"))
                    self._pending.clear()
                    if self._reader is not None:
                        self._reader.shutdown()  # idle: a reading is always waited for
                    return
            with self.turn, torch.inference_mode():
                try:
                    self._admit()
                    if self._rows:
                        self._step()
                except Exception as e:  # every row of the batch fails with it; the loop goes on
                    log.exception("decoding failed")
                    self._fail(self._rows, e)

    def _fail(self, jobs: list[Job], error: Exception) -> None:
        """`jobs` end with `error`, and the batch is emptied."""
        for job in jobs:
            job.out.put(error)
        self._rows, self._cache, self._mask = [], None, None

    def _admit(self) -> None:
        """Read the prompts of the waiting jobs that can join (first come, first served, same
        weights) and add them to the batch with their first token. Each distinct prompt is read
        once, in a forward of its own (three plans asked at once share one reading): that computes
        what the prompt's reading alone computes (no padding rows: no wasted work, no different
        rounding) and hands out first tokens sooner."""
        import torch

        joining: list[Job] = []
        with self._wake:
            while self._pending and len(self._rows) + len(joining) < self.max_batch:
                job = self._pending[0]
                if job.cancelled.is_set():
                    self._pending.popleft()
                    job.out.put(END)
                    continue
                if (self._rows or joining) and job.plain != self._plain:
                    break  # the batch drains first; then this job sets the weights
                self._pending.popleft()
                self._plain = job.plain
                joining.append(job)
        try:
            for prompt in dict.fromkeys(tuple(j.prompt) for j in joining):
                group = [j for j in joining if tuple(j.prompt) == prompt]
                if self._rows and self._alongside:
                    logits, cache = self._prefill_alongside(group)
                else:
                    logits, cache = self._prefill(group, self._threads[0])
                self._join(group, cache, torch.ones((len(group), len(prompt)), dtype=torch.long,
                                                    device=self.model.device))
                self._emit(group, logits.repeat(len(group), 1))  # each row its own scores: choosing writes to them
        except Exception as e:  # the jobs not yet in the batch fail too (the loop fails the batch's)
            joined = {id(job) for job in self._rows}
            for job in joining:
                if id(job) not in joined:
                    job.out.put(e)
            raise

    def _forward(self, input_ids, mask, positions, cache):
        if self._plain != self._applied and self.weights is not None:
            self._running = self.weights(self._plain)
            self._applied = self._plain
            if self._by_rows:
                decode_by_rows(self._running)
        out = self._running(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                            use_cache=True, **self._last_only)
        return out.logits[:, -1, :], out.past_key_values

    def _prefill(self, group: list[Job], threads: int):
        """(last scores, cache) of the group's prompt read on `threads` threads, the cache with a
        row for each job."""
        import torch

        device, config = self.model.device, self.model.config
        ids = torch.tensor([group[0].prompt], device=device)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():  # a mode of the thread: the reader's own
                logits, cache = self._forward(ids, torch.ones_like(ids), None, kv.empty(config))
        finally:
            torch.set_num_threads(previous)
        n = len(group)
        if n > 1:
            cache = kv.holding([(layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1))
                                for layer in cache.layers], config)
        return logits, cache

    def _prefill_alongside(self, group: list[Job]):
        """_prefill on the reader thread, with one thread, while this one goes on stepping the batch
        (with one): a prompt's reading is bound by arithmetic and a step by reading the weights, so
        on two cores the two overlap (a 600-token prompt read in 1.85 s alongside 18 steps of 5
        rows, against 0.9 s on two threads and then 1.8 s of steps). The batch's weights are the
        prompt's: a job for the other ones waits for the batch to drain."""
        from concurrent.futures import ThreadPoolExecutor, wait

        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="storyloom-reader")
        reading = self._reader.submit(self._prefill, group, 1)
        try:
            while self._rows and not reading.done():
                self._step(wide=False)
        finally:
            wait([reading])  # never leave the model to another forward while this one runs
        return reading.result()

    def _join(self, jobs: list[Job], cache, mask) -> None:
        """The batch with `jobs` (their cache and mask) added below its rows, both left-padded to
        the longer of the two."""
        import torch

        if not self._rows:
            self._rows, self._cache, self._mask = list(jobs), cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def padded(t, axis_len):  # left-pad the sequence axis (-2 for keys/values, -1 for masks)
            missing = width - axis_len
            if not missing:
                return t
            shape = list(t.shape)
            shape[-2 if t.dim() == 4 else -1] = missing
            return torch.cat([t.new_zeros(shape), t], dim=-2 if t.dim() == 4 else -1)

        layers = []
        for old, new in zip(self._cache.layers, cache.layers):
            layers.append((torch.cat([padded(old.keys, self._mask.shape[1]), padded(new.keys, mask.shape[1])]),
                           torch.cat([padded(old.values, self._mask.shape[1]),
                                      padded(new.values, mask.shape[1])])))
        self._mask = torch.cat([padded(self._mask, self._mask.shape[1]), padded(mask, mask.shape[1])])
        self._cache = kv.holding(layers, self.model.config)
        self._rows += jobs

    def _step(self, wide: bool = True) -> None:
        """One token for every row. `wide`: the step may use every thread when it is wide enough."""
        import torch

        last = torch.tensor([[job.tokens[-1]] for job in self._rows], device=self.model.device)
        positions = self._mask.sum(1, keepdim=True)  # each row's real tokens so far: the next position
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        wide = wide and self._wide_steps is not None and self._mask.numel() >= self._wide_steps
        if wide:
            torch.set_num_threads(self._threads[0])
        try:
            logits, self._cache = self._forward(last, self._mask, positions, self._cache)
        finally:
            if wide:
                torch.set_num_threads(self._threads[1])
        self._emit(self._rows, logits)

    def _emit(self, jobs: list[Job], logits) -> None:
        """Each job's next token from its row of `logits`, handed to its reader; then the rows
        that finished leave the batch."""
        for row, job in enumerate(jobs):
            if job.cancelled.is_set():
                continue
            token = self._choose(job, logits[row:row + 1])
            job.tokens.append(token)
            job.out.put(token)
        done = [r for r, job in enumerate(self._rows) if job.cancelled.is_set() or self._finished(job)]
        if done:
            self._leave(done)

    @staticmethod
    def _choose(job: Job, scores) -> int:
        import torch

        scores = scores.float()
        if job.processors:
            ids = torch.tensor([job.prompt + job.tokens], device=scores.device)
            for processor in job.processors:
                scores = processor(ids, scores)
        if job.suppress_ids:
            scores[:, list(job.suppress_ids)] = float("-inf")
        if len(job.tokens) < job.min_new_tokens and job.stop_ids:
            scores[:, list(job.stop_ids)] = float("-inf")
        if job.temperature <= 0:
            return int(scores.argmax(dim=-1))
        probs = torch.softmax(scores / job.temperature, dim=-1)
        if not job.top_k and job.top_p >= 1.0:
            return int(torch.multinomial(probs, 1, generator=job.generator))
        # top-k, then top-p over what top-k keeps, as transformers' generate does. Without top-k, the
        # smallest set reaching top_p lies among the likeliest few whenever those reach it (nearly
        # always): ordering those few is a small fraction of sorting the whole vocabulary
        ordered, order = probs.topk(min(job.top_k or NUCLEUS, probs.shape[-1]))
        if job.top_k:
            ordered /= ordered.sum()
        elif float(ordered.sum()) < job.top_p:
            ordered, order = probs.sort(descending=True)
        ordered[ordered.cumsum(-1) - ordered > job.top_p] = 0.0
        return int(order[0, torch.multinomial(ordered, 1, generator=job.generator)])

    @staticmethod
    def _finished(job: Job) -> bool:
        return (len(job.tokens) >= job.max_new_tokens
                or (job.tokens and job.tokens[-1] in job.stop_ids and len(job.tokens) >= job.min_new_tokens))

    def _leave(self, rows: list[int]) -> None:
        import torch

        for r in rows:
            self._rows[r].out.put(END)
        leaving = set(rows)
        keep = [r for r in range(len(self._rows)) if r not in leaving]
        self._rows = [self._rows[r] for r in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        start = int((mask.sum(0) > 0).nonzero()[0])  # columns that are padding for every row left go
        self._mask = mask[:, start:]
        self._cache = kv.holding([(layer.keys.index_select(0, index)[:, :, start:],
                                   layer.values.index_select(0, index)[:, :, start:])
                                  for layer in self._cache.layers], self.model.config)
