"""The recurrence (RecurrentGPT): `init` opens a story from a premise, `step` writes the next
paragraph from the short-term memory, retrieved long-term memories and a plan, rewrites
the short-term memory and proposes three plans. Focused calls, strict parsers, bounded
retries; on failure a GenerationFailed and nothing is returned to write."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from functools import partial

from generation import parse, prompts
from generation.backend import Backend, Decoding, Request
from common.errors import GenerationFailed, ParseError
from generation.prompts import Budget, fit

# A plan is a short call, and a small model often answers about the writing instead of the story:
# plans get more tries than the longer calls.
PLAN_TRIES = 6
# The small model sometimes answers the summary call with the paragraph itself; each retry samples
# hotter, and five tries made that failure vanish in our runs.
SUMMARY_TRIES = 5

# on_text(part, text so far): called as each part streams in ("title", "paragraph", ...).
OnText = Callable[[str, str], None]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    retries: int = 0
    calls: list[dict] = field(default_factory=list)  # the trace: prompt, raw output, problem
    parts: dict = field(default_factory=dict)  # tokens of each part of the paragraph prompt, and its budget
    decoding: dict | None = None  # the anti-repetition settings the calls used

    def add(self, other: "Usage") -> None:
        """`other`'s calls and counts added to these."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.retries += other.retries
        self.calls += other.calls
        self.decoding = self.decoding or other.decoding


@dataclass
class Opening:
    title: str
    outline: str
    paragraph: str
    short_memory: str
    plans: list[str]
    usage: Usage


@dataclass
class StepContext:
    premise: str
    outline: str
    short_memory: str
    last_paragraph: str  # the recent text: the last paragraph, and the end of the one before when short
    plan: str
    memories: Sequence[str] = ()  # retrieved by meaning, best first
    lore: Sequence[str] = ()  # pinned entries and lore whose key appears in the plan or the recent text


@dataclass
class Continuation:
    paragraph: str
    short_memory: str
    plans: list[str]
    usage: Usage


@dataclass
class Choice:
    number: int  # the plan picked, from 1
    instruction: str  # that plan revised into a short outline of the next paragraph
    usage: Usage


@dataclass
class Writer:
    backend: Backend
    budget: Budget = field(default_factory=Budget)
    retries: int = 3
    min_words: int = 60
    max_words: int = 200
    one_call: bool = False  # the whole step in one call (RecurrentGPT's format), for capable models
    decoding: Decoding | None = None  # anti-repetition settings for every free-text call

    def init(self, premise: str, title: str | None = None, on_text: OnText | None = None,
             outline: str | None = None) -> Opening:
        """Title (unless given), outline (unless given), opening paragraph, memory, plans."""
        usage, b, fitted = Usage(), self.budget, self._fit
        started = time.monotonic()
        premise = fitted(premise, b.premise)
        title = title or self._ask("title", prompts.title(premise), parse.parse_title, usage, on_text)
        outline = outline or self._ask(
            "outline", prompts.outline(premise),
            lambda raw: parse.parse_summary(prompts.OUTLINE_PREFIX + raw, max_words=90),
            usage, on_text, stop=partial(parse.sentences_done, count=3))
        opening = self._ask_paragraph(prompts.opening(premise, fitted(outline, b.outline)), usage, on_text)
        memory, plans = self._memory_and_plans(premise, opening, partial(self._ask_plans, outline), usage, on_text)
        usage.seconds = time.monotonic() - started
        return Opening(title, outline, opening, memory, plans, usage)

    def step(self, ctx: StepContext, on_text: OnText | None = None, reader: bool = False) -> Continuation:
        """The next paragraph, the rewritten short-term memory, and three plans (or, for a
        reader of interactive fiction, three choices of what to do next)."""
        usage, b, fitted = Usage(), self.budget, self._fit
        started = time.monotonic()
        parts, request = self._paragraph_request(ctx)
        usage.parts = self._measure(parts)
        if self.one_call and not reader:
            return self._step_in_one_call(parts, ctx.last_paragraph, usage, on_text, started)
        text = self._ask_paragraph(request, usage, on_text, previous=ctx.last_paragraph)
        ask = partial(self._ask_choices if reader else self._ask_plans, ctx.outline)
        memory, plans = self._memory_and_plans(fitted(ctx.short_memory, b.short_memory), text, ask, usage, on_text)
        usage.seconds = time.monotonic() - started
        return Continuation(text, memory, plans, usage)

    def paragraph(self, ctx: StepContext, on_text: OnText | None = None) -> tuple[str, Usage]:
        """The next paragraph alone, as a step would write it (no memory rewrite, no plans): for
        measurements that compare instructions."""
        usage, started = Usage(), time.monotonic()
        parts, request = self._paragraph_request(ctx)
        usage.parts = self._measure(parts)
        text = self._ask_paragraph(request, usage, on_text, previous=ctx.last_paragraph)
        usage.seconds = time.monotonic() - started
        return text, usage

    def _paragraph_request(self, ctx: StepContext) -> tuple[dict, Request]:
        b, fitted = self.budget, self._fit
        parts = {"premise": fitted(ctx.premise, b.premise), "short_memory": fitted(ctx.short_memory, b.short_memory),
                 "memories": self._fit_shares(ctx.memories, b.memories),
                 "lore": self._fit_shares(ctx.lore, b.lore),
                 "last_paragraph": fitted(ctx.last_paragraph, b.last_paragraph, "end"),
                 "instruction": fitted(ctx.plan, b.plan)}
        request = prompts.paragraph(**{k: parts[k] for k in ("premise", "short_memory", "memories", "lore")},
                                    last=parts["last_paragraph"], plan=parts["instruction"])
        return parts, request

    def _step_in_one_call(self, parts: dict, previous: str, usage: Usage, on_text: OnText | None,
                          started: float) -> Continuation:
        request = prompts.one_call(parts["premise"], parts["short_memory"], parts["memories"],
                                   parts["last_paragraph"], parts["instruction"], parts["lore"])
        out = self._ask("one_call", request,
                        partial(parse.parse_one_call, min_words=self.min_words,
                                max_words=self.max_words + 40, previous=previous), usage, on_text)
        usage.seconds = time.monotonic() - started
        return Continuation(out["paragraph"], out["short_memory"], out["plans"], usage)

    def summarize(self, short_memory: str, paragraph: str, on_text: OnText | None = None) -> tuple[str, Usage]:
        """The short-term memory rewritten to cover `paragraph` (after a person edited it)."""
        usage = Usage()
        started = time.monotonic()
        b = self.budget
        memory = self._ask_summary(self._fit(short_memory, b.short_memory),
                                   self._fit(paragraph, 2 * b.last_paragraph), usage, on_text)
        usage.seconds = time.monotonic() - started
        return memory, usage

    def choices(self, short_memory: str, last: str, on_text: OnText | None = None) -> tuple[list[str], Usage]:
        """Three things the reader could do next in the scene `last`."""
        usage = Usage()
        return self._ask_choices("", short_memory, last, usage, on_text), usage

    def choose(self, short_memory: str, last: str, plans: list[str], on_text: OnText | None = None) -> Choice:
        """RecurrentGPT's simulated human: pick the most promising plan, then revise it into a
        short outline for the next paragraph."""
        usage, b, fitted = Usage(), self.budget, self._fit
        if not plans:
            raise GenerationFailed("there are no plans to choose from; give an instruction")
        memory = fitted(short_memory, b.short_memory)
        request = prompts.choose(memory, fitted(last, b.last_paragraph, "end"), [fitted(p, b.plan) for p in plans])
        number = self._ask("choice", request, partial(parse.parse_choice, count=len(plans)), usage, on_text,
                           stop=lambda text: any(c.isdigit() for c in text))
        outline = self._ask("revised_plan", prompts.revise(memory, plans[number - 1]),
                            partial(parse.parse_summary, min_words=8, max_words=90), usage, on_text,
                            stop=partial(parse.sentences_done, count=3))
        return Choice(number, outline, usage)

    def _memory_and_plans(self, memory: str, text: str, ask: Callable[..., list[str]], usage: Usage,
                          on_text: OnText | None) -> tuple[str, list[str]]:
        """The short-term memory rewritten to cover the new `text`, and the three plans (`ask`:
        memory, last, usage, on_text -> plans). A backend that decodes calls together is
        asked for both at once, and the plans read the memory as it was with the new text after
        it (RecurrentGPT writes its plans and its new memory in one answer, from the same input);
        otherwise one after the other, and the plans read the new memory."""
        if not getattr(self.backend, "concurrent", False):
            rewritten = self._ask_summary(memory, text, usage, on_text)
            return rewritten, ask(rewritten, text, usage, on_text)
        from concurrent.futures import ThreadPoolExecutor, wait

        mine, theirs = Usage(), Usage()  # each call's own count, added to `usage` after: memory, then plans
        with ThreadPoolExecutor(1, thread_name_prefix="storyloom-memory") as pool:
            rewriting = pool.submit(self._ask_summary, memory, text, mine, on_text)
            try:
                plans = ask(memory, text, theirs, on_text)
            finally:
                wait([rewriting])
                usage.add(mine)
                usage.add(theirs)
        return rewriting.result(), plans

    # -- calls ---------------------------------------------------------------------

    def _measure(self, parts: dict) -> dict:
        """Tokens of each prompt part against its allowance (for the prompt inspector)."""
        count, b = self.backend.count_tokens, self.budget
        budget = {"premise": b.premise, "short_memory": b.short_memory, "memories": b.memories, "lore": b.lore,
                  "last_paragraph": b.last_paragraph, "instruction": b.plan}
        measured = {name: {"tokens": sum(count(t) for t in text) if isinstance(text, list) else count(text),
                           "budget": budget[name]} for name, text in parts.items()}
        measured["memories"]["each"] = [count(t) for t in parts["memories"]]
        measured["lore"]["each"] = [count(t) for t in parts["lore"]]
        return measured

    def _fit(self, text: str, tokens: int, keep: str = "start") -> str:
        return fit(text, tokens, self.backend.count_tokens, keep)

    def _fit_shares(self, texts: Sequence[str], allowance: int) -> list[str]:
        """Passages, most important first, within `allowance` tokens together: as many as can have
        16 tokens or more each (the least important are left out), each with an equal share, and
        a share a short passage leaves unused goes to the ones after it."""
        kept = list(texts[:max(1, allowance // 16)])
        fitted: list[str] = []
        for n, text in enumerate(kept):
            share = (allowance - sum(self.backend.count_tokens(f) for f in fitted)) // (len(kept) - n)
            fitted.append(self._fit(text, max(share, 1)))
        return fitted

    def _ask_paragraph(self, request: Request, usage: Usage, on_text: OnText | None, previous: str = "") -> str:
        def enough(text: str) -> bool:  # a blank line after the minimum, or the maximum at a sentence end
            n = len(text.split())
            return (n >= self.min_words and "\n\n" in text.strip()) or (
                n >= self.max_words and text.rstrip()[-1:] in ".!?\"”")

        parser = partial(parse.parse_paragraph, min_words=self.min_words, max_words=self.max_words + 40,
                         previous=previous)
        return self._ask("paragraph", request, parser, usage, on_text, stop=enough)

    def _ask_summary(self, memory: str, paragraph: str, usage: Usage, on_text: OnText | None) -> str:
        parser = partial(parse.parse_summary, paragraph=paragraph)
        return self._ask("short_memory", prompts.summary(memory, paragraph), parser, usage, on_text,
                         stop=partial(parse.sentences_done, count=prompts.SUMMARY_SENTENCES),
                         tries=max(self.retries, SUMMARY_TRIES))

    def _ask_plans(self, outline: str, memory: str, last: str, usage: Usage, on_text: OnText | None) -> list[str]:
        b = self.budget
        request = prompts.plan(self._fit(outline, b.outline), self._fit(memory, b.short_memory),
                               self._fit(last, b.last_paragraph, "end"))
        return self._ask_three("plan", request, parse.parse_plan, usage, on_text)

    def _ask_choices(self, outline: str, memory: str, last: str, usage: Usage, on_text: OnText | None) -> list[str]:
        b = self.budget
        request = prompts.reader_choice(self._fit(memory, b.short_memory), self._fit(last, b.last_paragraph, "end"))
        return self._ask_three("choice", request, parse.parse_reader_choice, usage, on_text)

    def _ask_three(self, name: str, request: Request, parser, usage: Usage, on_text: OnText | None) -> list[str]:
        """Three distinct answers, one call each; one too like an earlier one counts as a failed try.
        When the second or third stays unusable the step keeps the ones found (the person can write
        their own): a written paragraph is not thrown away for want of a third idea. A backend that
        decodes calls together (`concurrent`) is asked for all three at once."""
        if getattr(self.backend, "concurrent", False):
            return self._ask_three_at_once(name, request, parser, usage, on_text)
        found: list[str] = []

        def distinct(raw: str) -> str:
            answer = parser(raw)
            for number, earlier in enumerate(found, 1):
                if parse.similar(answer, earlier):
                    raise ParseError(f"the {name} repeats {name} {number}")
            return answer

        while len(found) < 3:
            try:
                found.append(self._ask(f"{name}_{len(found) + 1}", request, distinct, usage, on_text,
                                       stop=lambda text: parse.first_sentence_done(text) or "\n" in text.strip(),
                                       tries=max(self.retries, PLAN_TRIES)))
            except GenerationFailed:
                if not found:
                    raise
                break
        return found

    def _ask_three_at_once(self, name: str, request: Request, parser, usage: Usage,
                           on_text: OnText | None) -> list[str]:
        """The three answers asked for together (the backend decodes them as rows of one batch,
        reading their shared prompt once); then only the unusable ones (unparsable, or too like
        an answer with a lower number) again, all together, each within its own tries."""
        from concurrent.futures import ThreadPoolExecutor

        tries, request = max(self.retries, PLAN_TRIES), self._decoded(request, usage)
        prompt = self.backend.render(request)
        stop = lambda text: parse.first_sentence_done(text) or "\n" in text.strip()  # noqa: E731
        found: dict[int, str] = {}
        attempts = {n: 0 for n in (1, 2, 3)}
        problems: dict[int, Exception] = {}
        with ThreadPoolExecutor(3, thread_name_prefix="storyloom-three") as pool:
            while todo := [n for n in (1, 2, 3) if n not in found and attempts[n] < tries]:
                for n in todo:
                    attempts[n] += 1
                calls = list(pool.map(lambda n: self._attempt(f"{name}_{n}", request, prompt, attempts[n], on_text,
                                                              stop), todo))
                for n, call in zip(todo, calls):  # in plan order: a repeat is of a lower-numbered answer
                    self._count(call, usage)
                    try:
                        answer = parser(call["output"])
                        for number, earlier in sorted(found.items()):
                            if parse.similar(answer, earlier):
                                raise ParseError(f"the {name} repeats {name} {number}")
                        found[n] = answer
                    except ParseError as e:
                        call["problem"], problems[n] = str(e), e
                        usage.retries += attempts[n] < tries
        if not found:
            raise GenerationFailed(f"the model gave no usable {name} in {tries} tries (last problem: {problems[1]})")
        return [found[n] for n in sorted(found)]

    def _decoded(self, request: Request, usage: Usage) -> Request:
        """The request with the writer's decoding settings, unless it has its own or is a choice."""
        if self.decoding and request.decoding is None and not request.options:
            usage.decoding = asdict(self.decoding)
            return replace(request, decoding=self.decoding)
        return request

    def _attempt(self, part: str, request: Request, prompt: str, attempt: int, on_text: OnText | None,
                 stop: Callable[[str], bool] | None) -> dict:
        """One try of `request` (rendered as `prompt`): its call record (prompt, output, tokens).
        Later tries sample a little hotter."""
        if attempt > 1:
            request = replace(request, temperature=min(request.temperature + 0.2 * (attempt - 1), 1.3))
        raw = ""
        with closing(self.backend.generate(request)) as chunks:
            for chunk in chunks:
                raw += chunk
                if on_text:
                    on_text(part, raw)
                if stop and stop(raw):
                    break
        return {"part": part, "attempt": attempt, "prompt": prompt, "output": raw,
                "prompt_tokens": self.backend.count_tokens(prompt), "completion_tokens": self.backend.count_tokens(raw)}

    @staticmethod
    def _count(call: dict, usage: Usage) -> None:
        usage.prompt_tokens += call["prompt_tokens"]
        usage.completion_tokens += call["completion_tokens"]
        usage.calls.append(call)

    def _ask(self, part: str, request: Request, parser: Callable[[str], object], usage: Usage,
             on_text: OnText | None, stop: Callable[[str], bool] | None = None, tries: int | None = None):
        """One focused call, parsed strictly; a bounded number of tries (default self.retries)."""
        tries = tries or self.retries
        request = self._decoded(request, usage)
        prompt = self.backend.render(request)
        problem: ParseError | None = None
        for attempt in range(1, tries + 1):
            call = self._attempt(part, request, prompt, attempt, on_text, stop)
            self._count(call, usage)
            try:
                return parser(call["output"])
            except ParseError as e:
                call["problem"] = str(e)
                problem = e
                usage.retries += attempt < tries
        raise GenerationFailed(f"the model gave no usable {part.replace('_', ' ')} "
                               f"in {tries} tries (last problem: {problem})")
