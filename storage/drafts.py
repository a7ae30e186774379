"""A draft written elsewhere (Markdown or plain text, in whatever encoding) read into a manuscript:
its title, author, chapters and paragraphs, long paragraphs cut at sentence ends."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from common.errors import InvalidInput
from storage.formats import Chapter, Manuscript

MAX_DRAFT_BYTES = 20_000_000
PARAGRAPH_WORDS = 250  # a draft paragraph longer than this is split at sentence ends
PARAGRAPH_CHARS = 5000
_NUMBER = (r"(?:\d{1,4}|[IVXLC]{1,7}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
           r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|first|second|third|"
           r"fourth|fifth|sixth|seventh|eighth|ninth|tenth|last)")
_CHAPTER_LINE = re.compile(  # "Chapter 3", "CHAPTER THREE: The Door", "Chapter 12 The Storm", "Part II", "IV"
    rf"(?:(?i:(?:chapter|part|book)\s+{_NUMBER})\b|(?i:prologue|epilogue)\b)"
    rf"(?:\s*[:.—–-]\s*.{{0,80}}|\s+[A-Z0-9\"'“‘].{{0,80}})?|[IVXLC]{{1,7}}\.?")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SETEXT = re.compile(r"^(=+|-+)\s*$")
_ATX = re.compile(r"(#{1,6})(?:[ \t]+(.*))?")
_MD_BYLINE = re.compile(r"\*by (.{1,200})\*")  # what our Markdown export writes under the title
_TEXT_BYLINE = re.compile(r"by ([^.!?]{1,200})")  # and the plain-text one
_SCENE_BREAK = re.compile(r"^\s*([*#~-]\s*){3,}$")
_MD_UNESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'”’)]))\s+|(?<=[。！？])")


def decode_draft(raw: bytes, name: str) -> str:
    """A draft's bytes as text: UTF-16 with a byte-order mark, UTF-8 (with or without one; a few
    bad bytes become U+FFFD) or else Windows-1252; refused when empty, too large or binary."""
    if len(raw) > MAX_DRAFT_BYTES:
        raise InvalidInput(f"{name} has {len(raw):,} bytes; a draft may have at most {MAX_DRAFT_BYTES:,}")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = raw.decode("utf-16", errors="replace")
    elif b"\x00" in raw:
        raise InvalidInput(f"{name} is a binary file, not a text draft (give .md or .txt)")
    else:
        text = raw.decode("utf-8-sig", errors="replace")
        bad = text.count("\ufffd")
        good = sum(1 for c in text if ord(c) > 127) - bad  # characters that are valid UTF-8 beyond ASCII
        if bad and (good < 10 * bad or bad > 0.001 * len(text)):  # not UTF-8 with a stray byte: Windows-1252
            text = raw.decode("cp1252", errors="replace")
    if not text.strip():
        raise InvalidInput(f"{name} is empty")
    sample = text[:65536]
    controls = sum(1 for c in sample if unicodedata.category(c) == "Cc" and c not in "\t\n\r\f")
    if "\x00" in text or controls > 0.01 * len(sample) or text.count("\ufffd") > 0.01 * len(text):
        raise InvalidInput(f"{name} does not look like text (control characters or undecodable bytes)")
    text = "".join(c for c in text if c not in "\ufffe\uffff" and unicodedata.category(c) != "Cs")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_draft(text: str, markdown: bool, fallback_title: str = "Imported draft",
               max_paragraphs: int | None = None) -> Manuscript:
    """A draft as a manuscript. Markdown: the first level-1 heading is the title, other headings
    start chapters. Plain text: Setext headings (a line underlined with '=' or '-') and lines like
    "Chapter 3", "CHAPTER THREE: The Door", "Prologue" or "IV" alone start chapters; the first
    '='-underlined heading is the title. Hard-wrapped lines join, scene breaks (* * *) are dropped,
    and a paragraph over PARAGRAPH_WORDS words is split at sentence ends (a 200,000-character
    line becomes many paragraphs). A draft of more than `max_paragraphs` paragraphs is refused as
    soon as the count passes it, so that a file of blank lines costs no more than a long novel."""
    title: str | None = None
    count = 0
    author = ""
    chapters: list[Chapter] = []
    heading: str | None = None
    paragraphs: list[str] = []

    def close_chapter() -> None:
        if paragraphs:
            chapters.append(Chapter(heading, list(paragraphs)))
            paragraphs.clear()

    for block in _blocks(text):
        lines = [ln for ln in block.strip("\n").split("\n") if ln.strip()]  # trailing "  ": a hard break
        if not lines or _SCENE_BREAK.match(" ".join(lines)):
            continue
        level, name, lines = _heading(lines, markdown)
        if name is not None:
            if level == 1 and title is None and not chapters and not paragraphs:
                title = name
            elif heading is not None and not paragraphs:  # "Part One", then "Chapter 1": one title
                heading = f"{heading}: {name}"
            else:
                close_chapter()
                heading = name
        if not lines:
            continue
        if title is not None and not author and not chapters and not paragraphs and heading is None \
                and (byline := _byline(lines, markdown)):
            author = byline  # "by Ann" under the title, as our exports write it
            continue
        pieces = _split_long(_md_paragraph(lines) if markdown else " ".join(" ".join(lines).split()))
        count += len(pieces)
        if max_paragraphs is not None and count > max_paragraphs:
            raise InvalidInput(f"the draft has more than {max_paragraphs:,} paragraphs, the most one import takes "
                               "(STORYLOOM_MAX_DRAFT_PARAGRAPHS); split it, or import it in parts")
        paragraphs.extend(pieces)
    close_chapter()
    if not chapters:
        raise InvalidInput("the draft has no paragraphs of text")
    return Manuscript((title or fallback_title).strip()[:500] or fallback_title, chapters, author[:200])


def _blocks(text: str) -> Iterator[str]:
    """The text's blocks between blank lines, one at a time (a list of millions would cost more
    than the file)."""
    start = 0
    for gap in _BLANK_LINE.finditer(text):
        yield text[start:gap.start()]
        start = gap.end()
    yield text[start:]


def _byline(lines: list[str], markdown: bool) -> str | None:
    raw = " ".join(line.strip() for line in lines)
    found = (_MD_BYLINE if markdown else _TEXT_BYLINE).fullmatch(raw)
    if not found or (markdown and found.group(1).endswith("\\")):
        return None
    return _MD_UNESCAPE.sub(r"\1", found.group(1)).strip() if markdown else found.group(1).strip()


def _heading(lines: list[str], markdown: bool) -> tuple[int | None, str | None, list[str]]:
    """(level, heading, the block's lines after the heading) when the block starts with a heading."""
    if markdown and (found := _ATX.fullmatch(lines[0].strip())):
        text = (found.group(2) or "").rstrip()
        bare = text.rstrip("#")
        if bare != text and (not bare or bare[-1] in " \t"):  # a closing sequence: "## Title ##"
            text = bare.rstrip()
        return len(found.group(1)), _MD_UNESCAPE.sub(r"\1", text).strip() or None, lines[1:]
    if len(lines) == 2 and _SETEXT.match(lines[1]) and len(lines[0]) <= 200:
        name = _MD_UNESCAPE.sub(r"\1", lines[0].strip()) if markdown else lines[0].strip()
        return (1 if lines[1].lstrip().startswith("=") else 2), name, []
    if not markdown and len(lines) == 1 and _CHAPTER_LINE.fullmatch(lines[0].strip()):
        return 2, lines[0].strip(), []
    return None, None, lines


def _md_paragraph(lines: list[str]) -> str:
    """A Markdown paragraph's text: hard breaks ("  " or "\\" at a line end) kept as newlines,
    soft wraps joined, backslash escapes undone."""
    out = ""
    for line in lines:
        hard = line.endswith("  ") or line.endswith("\\")
        piece = line.strip()
        if piece.endswith("\\") and not piece.endswith("\\\\"):
            piece, hard = piece[:-1].rstrip(), True
        out += piece + ("\n" if hard else " ")
    return _MD_UNESCAPE.sub(r"\1", out.strip())


def sentences(text: str) -> list[str]:
    """The sentences of a text (end punctuation then space; CJK ends need no space)."""
    return [x for x in _SENTENCE_END.split(" ".join(text.split())) if x]


def _split_long(paragraph: str, words: int = PARAGRAPH_WORDS, chars: int = PARAGRAPH_CHARS) -> list[str]:
    """A paragraph cut at sentence ends into pieces of at most `words` words and `chars`
    characters; a sentence too long alone is cut between words, a word too long between characters."""
    if len(paragraph) <= chars and len(paragraph.split()) <= words:
        return [paragraph] if paragraph else []
    out: list[str] = []
    current: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal current, size
        if current:
            out.append(" ".join(current))
        current, size = [], 0

    for sentence in _SENTENCE_END.split(paragraph):
        pieces = [w[i:i + chars] for w in sentence.split() for i in range(0, len(w), chars)]
        if current and (len(current) + len(pieces) > words or size + len(sentence) + 1 > chars):
            flush()
        for piece in pieces:
            if current and (len(current) + 1 > words or size + len(piece) + 1 > chars):
                flush()
            current.append(piece)
            size += len(piece) + 1
    flush()
    return out
