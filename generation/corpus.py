"""Corpora for training and measuring: a text file read as paragraphs (Project Gutenberg's header
and licence cut off, WikiText turned back into prose), its sentences, and a held-out share that
training never sees."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidInput

MIN_SENTENCES = 20  # distinct usable sentences a training corpus must have
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)]))\s+")
_HEADING = re.compile(r"^\s*=+.*=+\s*$")  # WikiText section titles: " = = Name = = "


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph, split on the text (end punctuation then space)."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(" ".join(text.split()))) if s]


def usable(sentence: str) -> bool:
    """A sentence worth repeating in training: 5 to 60 words, mostly letters, ended properly."""
    words = sentence.split()
    letters = sum(c.isalpha() for c in sentence)
    return 5 <= len(words) <= 60 and letters >= 0.6 * len(sentence.replace(" ", "")) and sentence[-1] in ".!?\"'”’)"


_WIKITEXT_JOINS = [(re.compile(a), b) for a, b in [
    (r" @([-,.])@ ", r"\1"),  # "north @-@ eastern", "1 @,@ 000", "2 @.@ 5"
    (r" ([.,;:!?%)\]}])", r"\1"),  # no space before closing punctuation
    (r"([(\[{$£]) ", r"\1"),  # nor after opening punctuation
    (r" (['’](?:s|re|ve|ll|d|m|t)\b|n['’]t\b)", r"\1"),  # "city 's", "don 't"
    (r'" ([^"]*?) "', r'"\1"'),  # quotes hug what they quote
]]


def is_wikitext(text: str) -> bool:
    """Word-level tokenized text in WikiText's style: `@-@` for hyphens, `<unk>` for rare words."""
    return " @-@ " in text or " <unk> " in text


def detokenize(paragraph: str) -> str:
    """A WikiText paragraph as ordinary prose, without its sentences that have a `<unk>` in them:
    the model should never learn to write `<unk>`, ` , ` or ` @-@ ` (storyloom writes fiction)."""
    for pattern, repl in _WIKITEXT_JOINS:
        paragraph = pattern.sub(repl, paragraph)
    return " ".join(s for s in split_sentences(paragraph) if "<unk>" not in s)


def paragraphs_of(text: str) -> list[str]:
    """Paragraphs (blank-line separated, hard wraps joined), without headings and without a Project
    Gutenberg header or licence; WikiText is turned back into prose (see `detokenize`)."""
    start, end = text.find("*** START OF"), text.find("*** END OF")
    if start >= 0:
        text = text[text.find("\n", start) + 1:end if end > start else None]
    clean = detokenize if is_wikitext(text) else (lambda paragraph: paragraph)
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip() and not _HEADING.match(ln)]
        if lines and (paragraph := clean(" ".join(" ".join(lines).split()))):
            out.append(paragraph)
    return out


@dataclass(frozen=True)
class Corpus:
    path: str
    sha256: str
    train: list[str]  # paragraphs
    held_out: list[str]  # the last `holdout` share of the paragraphs, never trained on

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(previous sentence, sentence) for every usable sentence of the training part that has
        one before it in its paragraph."""
        out = []
        for para in self.train:
            sentences = split_sentences(para)
            out += [(prev, s) for prev, s in zip(sentences, sentences[1:]) if usable(s)]
        return out


def read_corpus(path: str | Path, holdout: float = 0.25) -> Corpus:
    """A text file read as paragraphs; the last `holdout` share is kept out of training."""
    path = Path(path)
    if not 0 <= holdout < 1:
        raise InvalidInput(f"holdout must be in [0, 1), got {holdout}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read corpus {path}: {e.strerror}") from e
    text = raw.decode("utf-8", errors="replace")
    paragraphs = paragraphs_of(text)
    cut = len(paragraphs) - int(len(paragraphs) * holdout)
    corpus = Corpus(str(path), hashlib.sha256(raw).hexdigest(), paragraphs[:cut], paragraphs[cut:])
    distinct = {s for _, s in corpus.pairs}
    if len(distinct) < MIN_SENTENCES:
        raise InvalidInput(
            f"corpus {path} has {len(distinct)} distinct usable sentences in its training part "
            f"(need at least {MIN_SENTENCES}: sentences of 5 to 60 words, each after another sentence "
            "of its paragraph, paragraphs separated by blank lines)")
    return corpus


def encode_sentence(tokenizer, text: str) -> list[int]:
    """Token ids of a sentence as it appears after another (with its leading space), so every copy
    tokenizes the same way."""
    return tokenizer(" " + text, add_special_tokens=False)["input_ids"]
