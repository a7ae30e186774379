"""Prompts for the focused calls a small model can follow, each within a token budget.

Every variable part is cut to its own allowance, so a prompt never grows with the story."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from generation.backend import Request
from generation.parse import META_STARTS

SYSTEM = ("You are a skilled novelist writing a story together with a person. "
          "You write vivid, concrete prose in English.")


@dataclass(frozen=True)
class Budget:
    """Token allowance of each part of a prompt."""

    premise: int = 120
    outline: int = 120
    short_memory: int = 360
    memories: int = 400  # all retrieved passages together
    lore: int = 200  # pinned entries and triggered lore together
    last_paragraph: int = 240  # the recent text: the end of the manuscript so far
    plan: int = 120


def fit(text: str, max_tokens: int, count: Callable[[str], int], keep: str = "start") -> str:
    """`text` cut to at most max_tokens, at a word boundary, keeping its start or its end."""
    text = " ".join(text.split())
    if count(text) <= max_tokens:
        return text
    words = text.split()
    if len(words) == 1 or count(words[0 if keep == "start" else -1] + " …") > max_tokens:
        units, glue = list(text), ""  # one huge "word" (text without spaces): cut characters instead
    else:
        units, glue = words, " "
    lo, hi = 0, len(units)  # the most units that fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        part = units[:mid] if keep == "start" else units[len(units) - mid:]
        lo, hi = (mid, hi) if count(glue.join(part) + " …") <= max_tokens else (lo, mid - 1)
    part = glue.join(units[:lo] if keep == "start" else units[len(units) - lo:])
    return (part + " …") if keep == "start" else ("… " + part)


def _chat(user: str, **settings) -> Request:
    return Request(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], **settings)


def title(premise: str) -> Request:
    return _chat(f"Premise: {premise}\n\nWrite a short title for this story. Reply with the title only.",
                 max_new_tokens=24, temperature=0.7)


OUTLINE_PREFIX = "The story begins when"


def outline(premise: str) -> Request:
    return _chat(f"Premise: {premise}\n\nWrite an outline of this story in three sentences: how it begins, "
                 "what goes wrong in the middle, and how it ends.",
                 reply_prefix=OUTLINE_PREFIX, max_new_tokens=140, temperature=0.7)


def opening(premise: str, outline_text: str) -> Request:
    return _chat(f"Premise: {premise}\n\nOutline: {outline_text}\n\nWrite the opening paragraph of this story, "
                 "about 120 words, in the third person and the past tense.",
                 max_new_tokens=260, min_new_tokens=100, temperature=0.8)


def _lore(lore: Sequence[str]) -> str:
    facts = "".join(f"- {m}\n" for m in lore)
    return f"Facts to keep in mind:\n{facts}\n" if facts else ""


def paragraph(premise: str, short_memory: str, memories: Sequence[str], last: str, plan: str,
              lore: Sequence[str] = ()) -> Request:
    related = "".join(f"- {m}\n" for m in memories)
    related = f"Passages from earlier in the story:\n{related}\n" if related else ""
    return _chat(f"Premise: {premise}\n\n{_lore(lore)}Summary of the story so far: {short_memory}\n\n{related}"
                 f"The last paragraph: {last}\n\nWrite the next paragraph of the story, about 120 words, "
                 f"continuing directly from the last paragraph. In this paragraph: {plan}",
                 max_new_tokens=260, min_new_tokens=100, temperature=0.8)


SUMMARY_SENTENCES = 5


def summary(short_memory: str, new_paragraph: str) -> Request:
    return _chat(f"Summary of the story so far: {short_memory}\n\nNew paragraph: {new_paragraph}\n\n"
                 "Rewrite the summary so that it also covers the new paragraph, in at most "
                 f"{SUMMARY_SENTENCES} sentences. Keep names, places and important facts.",
                 max_new_tokens=180, temperature=0.3)


PLAN_PREFIX = "Next,"


def plan(outline_text: str, short_memory: str, last: str) -> Request:
    """One plan per call: a small model follows this far better than a numbered list."""
    return _chat(f"Outline: {outline_text}\n\nSummary of the story so far: {short_memory}\n\n"
                 f"The last paragraph: {last}\n\nWhat happens next in the story? Answer in one sentence.",
                 reply_prefix=PLAN_PREFIX, max_new_tokens=60, temperature=1.0, avoid_start=META_STARTS)


CHOICE_PREFIX = "The best idea is number "


def choose(short_memory: str, last: str, plans: list[str]) -> Request:
    """The simulated human of auto mode, first half: pick the most promising plan."""
    listed = "".join(f"{n}. {p}\n" for n, p in enumerate(plans, 1))
    return _chat(f"Summary of the story so far: {short_memory}\n\nThe last paragraph: {last}\n\n"
                 f"Ideas for the next paragraph:\n{listed}\nWhich idea makes the most interesting next "
                 "paragraph? Answer with its number only.",
                 reply_prefix=CHOICE_PREFIX, max_new_tokens=8, temperature=0.3,
                 options=tuple(str(n) for n in range(1, len(plans) + 1)))


def revise(short_memory: str, plan_text: str) -> Request:
    """Second half: revise the chosen plan into a short outline of the next paragraph."""
    return _chat(f"Summary of the story so far: {short_memory}\n\nIdea for the next paragraph: {plan_text}\n\n"
                 "Rewrite the idea as a short outline of the next paragraph, in two or three sentences: "
                 "what happens, who is there, and how the paragraph ends.", max_new_tokens=110, temperature=0.7)


CHOICE_TEXT_PREFIX = "You decide to"


PARAPHRASE_ASK = ("Rewrite this instruction in clear, simple words. Say who does what, use names instead of he, "
                  "she, it or they, and keep its meaning. Reply with the rewritten instruction only.")
# One worked example first: the small model copies its shape (one plain sentence with names).
PARAPHRASE_EXAMPLE = (
    "Summary of the story so far: Jon, a fisherman, lost his boat in a storm. His sister Ada found "
    "the wreck on the rocks below the cliffs.\n\nInstruction: He goes down there with her and they "
    "sort out the thing.",
    "Jon climbs down to the rocks with his sister Ada, and together they repair his wrecked boat.")


def paraphrase(instruction: str, context: str = "") -> Request:
    """SCA: reword a person's instruction so a model cannot misread it (one candidate per call)."""
    known = f"Summary of the story so far: {context}\n\n" if context else ""
    example, answer = PARAPHRASE_EXAMPLE
    return Request(messages=[{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": f"{example}\n\n{PARAPHRASE_ASK}"},
                             {"role": "assistant", "content": answer},
                             {"role": "user", "content": f"{known}Instruction: {instruction}\n\n{PARAPHRASE_ASK}"}],
                   max_new_tokens=60, temperature=0.5, avoid_start=META_STARTS)


def reader_choice(short_memory: str, last: str) -> Request:
    """One choice for a reader of interactive fiction: what the main character does next."""
    return _chat(f"Summary of the story so far: {short_memory}\n\nThe last paragraph: {last}\n\n"
                 "The reader plays the main character. What could the main character do next? "
                 "Answer with one short action.", reply_prefix=CHOICE_TEXT_PREFIX, max_new_tokens=30, temperature=1.0,
                 avoid_start=META_STARTS)


ONE_CALL_FORMAT = """Output Paragraph:
<the next paragraph, about 150 words>

Output Memory:
Rationale: <how the memory should change after this paragraph>
Updated Memory: <the summary of the story so far, at most 200 words>

Output Instruction:
Instruction 1: <one thing that could happen next>
Instruction 2: <a different thing that could happen next>
Instruction 3: <a third, different thing that could happen next>"""


def one_call(premise: str, short_memory: str, memories: Sequence[str], last: str, plan: str,
             lore: Sequence[str] = ()) -> Request:
    """The whole step in one call, in RecurrentGPT's output format (for capable models)."""
    related = "".join(f"- {m}\n" for m in memories) or "- (none yet)\n"
    return _chat(f"I am writing a novel and need your help with the next step.\n\nPremise: {premise}\n\n{_lore(lore)}"
                 f"Memory (a summary of the story so far): {short_memory}\n\nRelated earlier passages:\n{related}\n"
                 f"Last paragraph: {last}\n\nInstruction for the next paragraph: {plan}\n\n"
                 "Write the next paragraph following the instruction, update the memory, and propose three "
                 f"instructions for what could come next. Reply exactly in this format:\n\n{ONE_CALL_FORMAT}",
                 max_new_tokens=700, min_new_tokens=0, temperature=0.8)
