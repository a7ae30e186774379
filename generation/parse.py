"""Strict parsers for each focused call. Pure functions; each raises ParseError on bad output."""

from __future__ import annotations

import re

from common.errors import ParseError

_PREAMBLE = re.compile(r"^\s*(sure|certainly|okay|ok|here('s| is| are)|of course)\b[^\n]*[:!]\s*", re.I)
# Replies that address the person ("I'll...", "Let's...") instead of saying what happens. A plan or
# a reader's choice may not start with these words; the backend keeps them from the first token too.
META_STARTS = ("I", "we", "you", "let", "sure", "here", "this")
_META = re.compile(r"^(i|i'll|i'd|i'm|i've|let's|let us|you|you'll|we|we'll|sure|here|this|in this)\b", re.I)
_LABEL = re.compile(r"^\s*(title|summary|outline|paragraph|plan|next)\s*[:\-]\s*", re.I)
_NOT_AN_END = "".join(rf"(?<!\b{a})" for a in ("Mr", "Mrs", "Ms", "Dr", "St", "Mt", "Prof", "Sr", "Jr", "vs"))
SENTENCE_END = re.compile(_NOT_AN_END + r"(?<!\b[A-Z])[.!?…][\"'”’)\]]*(?=\s|$)")


def words(text: str) -> list[str]:
    return text.split()


def _tidy(text: str) -> str:
    text = _PREAMBLE.sub("", text.strip())
    text = _LABEL.sub("", text)
    return " ".join(text.split())


def complete_sentences(text: str) -> str:
    """`text` up to its last sentence end; the whole text if it has none."""
    ends = list(SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].strip() if ends else text.strip()


def truncate_words(text: str, limit: int) -> str:
    """At most `limit` words, cut at a sentence end when there is one in range."""
    if len(words(text)) <= limit:
        return text
    cut = " ".join(words(text)[:limit])
    return complete_sentences(cut) if SENTENCE_END.search(cut) else cut


def parse_title(raw: str, max_words: int = 14) -> str:
    body = _PREAMBLE.sub("", raw.strip())
    line = next((ln for ln in body.splitlines() if ln.strip()), "")
    title = _tidy(line).strip("*#\"'“”‘’. ")
    if len(words(title)) > max_words:  # "Main Title: a long subtitle" -> "Main Title"
        title = re.split(r":| - | — ", title)[0].strip("*#\"'“”‘’. ")
    if not title:
        raise ParseError("the model gave an empty title")
    if len(words(title)) > max_words:
        raise ParseError(f"the title has {len(words(title))} words (at most {max_words})")
    return title


def parse_paragraph(raw: str, min_words: int = 60, max_words: int = 260, previous: str = "") -> str:
    """One paragraph of prose: whitespace joined, cut at the last full sentence; not a copy of
    the previous paragraph."""
    text = complete_sentences(_tidy(raw.replace("#", "")))
    text = truncate_words(text, max_words)
    n = len(words(text))
    if n < min_words:
        raise ParseError(f"the paragraph has {n} words (at least {min_words})")
    if previous and copied(text, previous) > 0.5:
        raise ParseError("the paragraph mostly repeats the previous one")
    return text


def copied(text: str, source: str, n: int = 4) -> float:
    """The share of `text`'s word n-grams that also occur in `source`."""
    def grams(s: str) -> set[tuple[str, ...]]:
        w = re.findall(r"\w+", s.lower())
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}

    mine = grams(text)
    return len(mine & grams(source)) / len(mine) if mine else 0.0


def parse_summary(raw: str, min_words: int = 10, max_words: int = 250, paragraph: str = "") -> str:
    """A summary of at most max_words that is not just a copy of the new paragraph."""
    text = truncate_words(complete_sentences(_tidy(raw)), max_words)
    n = len(words(text))
    if n < min_words:
        raise ParseError(f"the summary has {n} words (at least {min_words})")
    if paragraph and copied(text, paragraph) > 0.85:
        raise ParseError("the summary copies the new paragraph instead of summarising the story")
    return text


def parse_plan(raw: str, min_words: int = 5, max_words: int = 45) -> str:
    """The first sentence of the reply, at most max_words (cut at a comma when longer)."""
    text = _tidy(raw.replace("\n", " ")).strip(" \"'“”")
    end = SENTENCE_END.search(text)
    sentence = text[: end.end()] if end else text
    if len(words(sentence)) > max_words:
        cut = " ".join(words(sentence)[:max_words])
        at_comma = cut[: cut.rfind(",")] if "," in cut else ""
        sentence = at_comma + "." if len(words(at_comma)) >= max_words // 2 else cut + " …"
    sentence = sentence.strip(" \"'“”")
    if len(words(sentence)) < min_words:
        raise ParseError(f"the plan has {len(words(sentence))} words (at least {min_words})")
    if _META.match(sentence):
        raise ParseError("the plan talks about the writing instead of the story")
    return sentence[0].upper() + sentence[1:]


def first_sentence_done(text: str, min_words: int = 5) -> bool:
    """True once `text` holds a full first sentence (generation can stop)."""
    end = SENTENCE_END.search(text)
    return end is not None and len(words(text[: end.end()])) >= min_words


def sentences_done(text: str, count: int) -> bool:
    """True once `text` holds `count` full sentences."""
    return sum(1 for _ in SENTENCE_END.finditer(text)) >= count


def similar(a: str, b: str, threshold: float = 0.7) -> bool:
    """Word-set Jaccard similarity at or above threshold (near-duplicates)."""
    sa, sb = set(re.findall(r"\w+", a.lower())), set(re.findall(r"\w+", b.lower()))
    if not sa or not sb:
        return sa == sb
    return len(sa & sb) / len(sa | sb) >= threshold


def parse_paraphrase(raw: str, original: str, max_words: int = 80) -> str:
    """A rewording of `original`: the first paragraph of the reply, unquoted, at most max_words;
    not the original again, and not a reply about the writing."""
    body = _PREAMBLE.sub("", raw.strip())
    first = next((p for p in re.split(r"\n\s*\n", body) if p.strip()), "")
    text = re.sub(r"^\s*(rewritten|clear|new|revised)?\s*(instruction|version|rewrite)\s*[:\-]\s*", "",
                  " ".join(first.split()), flags=re.I).strip(" \"'“”*")
    text = truncate_words(text, max_words)
    if len(words(text)) < 3:
        raise ParseError(f"the paraphrase has {len(words(text))} words (at least 3)")
    if _META.match(text):
        raise ParseError("the paraphrase talks about the writing instead of rewording the instruction")
    if similar(text, original, 0.95):
        raise ParseError("the paraphrase repeats the instruction")
    return text


def parse_choice(raw: str, count: int = 3) -> int:
    """The first number 1..count in the reply."""
    for match in re.finditer(r"\d+", raw):
        if 1 <= int(match.group()) <= count:
            return int(match.group())
    raise ParseError(f"the reply names no idea between 1 and {count}")


def parse_reader_choice(raw: str, min_words: int = 2, max_words: int = 20) -> str:
    """An action for the reader ("open the door.") from the reply to "You decide to ...":
    the first line and sentence, at most max_words, as a capitalised command."""
    line = raw.strip().splitlines()[0] if raw.strip() else ""
    end = SENTENCE_END.search(line)
    action = (line[: end.end()] if end else line).strip(" \"'“”")
    if len(words(action)) > max_words:
        action = " ".join(words(action)[:max_words]).rstrip(",;:") + " …"
    if len(words(action)) < min_words:
        raise ParseError(f"the choice has {len(words(action))} words (at least {min_words})")
    if _META.match(action) or re.search(r"\b(story|scene|narrative|reader|writing|rewrite)\b", action, re.I):
        raise ParseError("the choice talks about the writing instead of an action")
    action = action if action[-1] in ".!?…" else action + "."
    return action[0].upper() + action[1:]


_ONE_CALL = re.compile(
    r"Output Paragraph:\s*(?P<paragraph>.+?)\s*Output Memory:\s*Rational(?:e)?:\s*(?P<rationale>.+?)\s*"
    r"Updated Memory:\s*(?P<memory>.+?)\s*Output Instruction:\s*Instruction 1:\s*(?P<i1>.+?)\s*"
    r"Instruction 2:\s*(?P<i2>.+?)\s*Instruction 3:\s*(?P<i3>.+?)\s*$", re.S | re.I)


def parse_one_call(raw: str, min_words: int = 60, max_words: int = 400, previous: str = "") -> dict:
    """RecurrentGPT's one-call output: paragraph, memory rationale, updated memory, three instructions.
    Every section must be present, in order; each is then checked like its focused-call twin."""
    found = _ONE_CALL.search(raw.strip())
    if found is None:
        raise ParseError("the reply is not in the expected format (Output Paragraph / Output Memory / "
                         "Output Instruction with Instruction 1-3)")
    instructions = [parse_plan(found.group(k)) for k in ("i1", "i2", "i3")]
    for n, text in enumerate(instructions, 1):
        if any(similar(text, other) for other in instructions[:n - 1]):
            raise ParseError(f"instruction {n} repeats an earlier one")
    paragraph = parse_paragraph(found.group("paragraph"), min_words=min_words, max_words=max_words,
                                previous=previous)
    return {"paragraph": paragraph, "rationale": _tidy(found.group("rationale")),
            "short_memory": parse_summary(found.group("memory"), paragraph=paragraph), "plans": instructions}
