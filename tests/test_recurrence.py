"""The loop logic with a scripted backend: parsing, bounded retries, bounded prompts."""

import pytest

from common.errors import GenerationFailed
from generation.prompts import Budget, fit
from generation.recurrence import PLAN_TRIES, StepContext, Writer
from tests.fakes import PARAGRAPH, PLANS, ScriptedBackend


def test_init_produces_every_part():
    opening = Writer(ScriptedBackend()).init("A keeper finds a letter from the future.")
    assert opening.title == "The Keeper's Letter"
    assert opening.outline.startswith("The story begins when a keeper finds a letter.")
    assert opening.paragraph == PARAGRAPH
    assert "letter from the future" in opening.short_memory
    assert opening.plans == [p.strip() for p in PLANS]
    assert opening.usage.prompt_tokens > 0 and opening.usage.completion_tokens > 0


def test_a_given_title_is_kept_and_not_asked_for():
    backend = ScriptedBackend()
    opening = Writer(backend).init("premise", title="My Title")
    assert opening.title == "My Title"
    assert not any("short title" in r.messages[-1]["content"] for r in backend.requests)


def _varied_plans():
    plans = iter([" Mara rows to the reef at dawn.", " Mara rows to the reef at dawn!",
                  " A storm breaks the great lamp.", " Tomas the baker arrives with news."])
    return lambda request: next(plans) if "What happens next" in request.messages[-1]["content"] else None


def test_plans_are_distinct_a_repeat_is_retried():
    writer = Writer(ScriptedBackend(_varied_plans()))
    opening = writer.init("premise", title="T")
    assert opening.plans == ["Mara rows to the reef at dawn.", "A storm breaks the great lamp.",
                             "Tomas the baker arrives with news."]
    assert opening.usage.retries == 1
    assert any(c.get("problem") == "the plan repeats plan 1" for c in opening.usage.calls)


def test_a_step_keeps_its_plans_when_the_third_stays_unusable_and_fails_without_any():
    plans = iter([" Mara rows to the reef at dawn.", " A storm breaks the great lamp."])

    def two_then_meta(request):
        if "What happens next" in request.messages[-1]["content"]:
            return next(plans, " we see the keeper think about the letter for a while.")
        return None

    opening = Writer(ScriptedBackend(two_then_meta)).init("premise", title="T")
    assert opening.plans == ["Mara rows to the reef at dawn.", "A storm breaks the great lamp."]
    problems = [c.get("problem") for c in opening.usage.calls if c["part"] == "plan_3"]
    assert len(problems) == PLAN_TRIES and set(problems) == {"the plan talks about the writing instead of the story"}

    def meta(request):
        return " we see the keeper think." if "What happens next" in request.messages[-1]["content"] else None

    with pytest.raises(GenerationFailed, match="no usable plan 1 in 6 tries"):
        Writer(ScriptedBackend(meta)).init("premise", title="T")


def test_bad_output_is_retried_then_fails_clearly():
    def reply(request):
        return "Too short." if "paragraph" in request.messages[-1]["content"] else None

    backend = ScriptedBackend(reply)
    with pytest.raises(GenerationFailed, match="no usable paragraph in 3 tries"):
        Writer(backend, retries=3).init("premise", title="T")
    assert sum("opening paragraph" in r.messages[-1]["content"] for r in backend.requests) == 3


def test_one_bad_output_then_a_good_one_succeeds():
    attempts = []

    def reply(request):
        if "opening paragraph" in request.messages[-1]["content"]:
            attempts.append(1)
            return "Nope." if len(attempts) == 1 else PARAGRAPH
        return None

    backend = ScriptedBackend(reply)
    opening = Writer(backend).init("premise", title="T")
    assert opening.paragraph == PARAGRAPH and opening.usage.retries == 1
    tries = [r.temperature for r in backend.requests if "opening paragraph" in r.messages[-1]["content"]]
    assert tries[1] > tries[0]  # the retry samples hotter


def test_paragraph_generation_stops_at_a_blank_line_after_the_minimum():
    long_reply = PARAGRAPH + "\n\n" + "Another paragraph that should never be read. " * 50

    def reply(request):
        return long_reply if "paragraph of the story" in request.messages[-1]["content"] else None

    backend = ScriptedBackend(reply)
    result = Writer(backend).step(StepContext("premise", "outline", "memory", "last", "plan"))
    assert result.paragraph == PARAGRAPH
    paragraph_call = next(c for c in result.usage.calls if c["part"] == "paragraph")
    assert "never be read" not in paragraph_call["output"]


def test_streaming_reports_each_part():
    seen = []
    Writer(ScriptedBackend()).step(StepContext("p", "o", "m", "last", "plan"),
                                   on_text=lambda part, text: seen.append(part))
    assert {"paragraph", "short_memory", "plan_1", "plan_2", "plan_3"} <= set(seen)


def test_prompt_parts_are_cut_to_their_budget_so_prompts_do_not_grow():
    budget = Budget()
    backend = ScriptedBackend()
    writer = Writer(backend, budget=budget)
    sizes = []
    for n in (20, 200):  # both past every allowance: the prompt must stop growing
        backend.requests.clear()
        ctx = StepContext("premise " * 10 * n, "outline " * 10 * n, "memory " * 100 * n, "last " * 100 * n,
                          "plan " * 10 * n, ["retrieved " * 100 * n] * 4)
        writer.step(ctx)
        sizes.append(backend.count_tokens(backend.render(backend.requests[0])))
    assert sizes[1] <= budget.premise + budget.short_memory + budget.memories + budget.last_paragraph \
        + budget.plan + 200
    assert sizes[1] <= 1.05 * sizes[0]


def test_fit_keeps_start_or_end_within_budget():
    count = lambda t: len(t.split())  # noqa: E731
    text = " ".join(str(i) for i in range(100))
    assert fit(text, 10, count).split()[:3] == ["0", "1", "2"]
    assert count(fit(text, 10, count)) <= 10
    assert fit(text, 10, count, keep="end").split()[-1] == "99"
    assert fit("short text", 10, count) == "short text"


def test_one_call_mode_writes_the_step_in_a_single_call():
    backend = ScriptedBackend()
    result = Writer(backend, one_call=True).step(StepContext("premise", "outline", "memory", "last", "plan"))
    assert len(backend.requests) == 1
    assert result.plans == [p.strip() for p in PLANS]
    assert result.short_memory.startswith("Mara found a letter from the future")
    assert [c["part"] for c in result.usage.calls] == ["one_call"]


def test_fit_cuts_text_without_spaces_by_characters():
    count = len  # one token per character
    assert len(fit("x" * 4000, 100, count, keep="end")) <= 100
    assert len(fit("y" * 4000, 100, count)) <= 100
    assert fit("a" * 50 + " " + "b" * 4000, 100, count, keep="end").endswith("b")


class Together(ScriptedBackend):
    """The script as a backend that decodes calls together: the first three plan calls must be in
    flight at once (a barrier that breaks after 10 s if they come one after another)."""

    concurrent = True

    def __init__(self, plans: list[str]):
        import threading

        self.plans, self.lock, self.barrier = iter(plans), threading.Lock(), threading.Barrier(3, timeout=10)
        self.asked = 0
        super().__init__(self.answer)

    def answer(self, request):
        if "What happens next" not in request.messages[-1]["content"]:
            return None
        with self.lock:
            self.asked += 1
            first_round = self.asked <= 3
        if first_round:
            self.barrier.wait()
        with self.lock:
            return next(self.plans, " we see the keeper think about the letter for a while.")


def test_a_backend_that_batches_is_asked_for_three_plans_at_once_and_only_the_bad_one_again():
    backend = Together([" Mara rows to the reef at dawn.", " Mara rows to the reef at dawn!",
                        " A storm breaks the great lamp.", " Tomas the baker arrives with news."])
    opening = Writer(backend).init("premise", title="T")
    assert backend.asked == 4  # three at once, then the one that repeated another, alone
    # which of the two alike answers came first is the threads' race; one of them is kept
    assert sorted(p.rstrip(".!") for p in opening.plans) == ["A storm breaks the great lamp",
                                                             "Mara rows to the reef at dawn",
                                                             "Tomas the baker arrives with news"]
    plan_calls = [c for c in opening.usage.calls if c["part"].startswith("plan_")]
    assert [c["attempt"] for c in plan_calls] == [1, 1, 1, 2] and opening.usage.retries == 1
    assert [c.get("problem") for c in plan_calls].count(None) == 3
    assert any(str(c.get("problem", "")).startswith("the plan repeats plan") for c in plan_calls)


def test_a_batching_backend_keeps_the_plans_it_found_and_fails_without_any():
    backend = Together([" Mara rows to the reef at dawn.", " A storm breaks the great lamp."])
    opening = Writer(backend).init("premise", title="T")
    assert sorted(opening.plans) == sorted(["Mara rows to the reef at dawn.", "A storm breaks the great lamp."])
    assert backend.asked == 3 + PLAN_TRIES - 1  # the third alone, again until its tries ran out
    with pytest.raises(GenerationFailed, match="no usable plan in 6 tries"):
        Writer(Together([])).init("premise", title="T")


class MemoryBesidePlans(ScriptedBackend):
    """A backend that decodes calls together, whose memory call and three plan calls must all be
    in flight at once (a barrier of four that breaks after 10 s)."""

    concurrent = True

    def __init__(self):
        import threading

        self.barrier, self.lock, self.plans = threading.Barrier(4, timeout=10), threading.Lock(), iter(PLANS)
        super().__init__(self.answer)

    def answer(self, request):
        asked = request.messages[-1]["content"]
        if "Rewrite the summary" in asked or "What happens next" in asked:
            self.barrier.wait()
        if "What happens next" in asked:
            with self.lock:
                return next(self.plans)
        return None  # the script's answer


@pytest.mark.parametrize("together", [True, False])
def test_the_memory_and_the_plans_are_asked_at_once_where_calls_decode_together(together):
    backend = MemoryBesidePlans() if together else ScriptedBackend()
    result = Writer(backend).step(StepContext("premise", "outline", "the old memory", "last", "plan"))
    assert result.short_memory.startswith("Mara, a lighthouse keeper")
    assert len(result.plans) == 3
    asked = [r.messages[-1]["content"] for r in backend.requests]
    plan_prompts = [a for a in asked if "What happens next" in a]
    # at once, the plans read the memory as it was (with the new paragraph); one after another, the new one
    assert all(("the old memory" in p) == together and (result.short_memory in p) != together for p in plan_prompts)
    assert all(PARAGRAPH[-40:] in p for p in plan_prompts)
    parts = [c["part"] for c in result.usage.calls]
    assert parts[:2] == ["paragraph", "short_memory"] and sorted(parts[2:]) == ["plan_1", "plan_2", "plan_3"]
    assert result.usage.completion_tokens == sum(c["completion_tokens"] for c in result.usage.calls)
