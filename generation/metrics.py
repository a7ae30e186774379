"""Repetition metrics: rep-n, rep-w and rep-r over tokens (Welleck et al., 2020; Fu et al., 2021),
repeated sentences over text, and the log-probability of each token of a sequence."""

from __future__ import annotations

import re
from collections.abc import Sequence

from generation.corpus import split_sentences

METRICS = ("rep_2", "rep_3", "rep_4", "rep_w", "rep_r", "sentence_repetition")


def token_logprobs(logits, ids):
    """log p(ids[:, t] | ids[:, :t]) for t = 1..T-1, shape [B, T-1]."""
    import torch.nn.functional as F

    return -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")


def rep_n(tokens: Sequence, n: int) -> float:
    """1 - distinct n-grams / n-grams (Welleck et al., 2020): 0 when no n-gram repeats."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def rep_w(tokens: Sequence, w: int = 16) -> float:
    """The share of tokens that already occur among the w tokens before them (Fu et al., 2021)."""
    if not tokens:
        return 0.0
    return sum(tokens[i] in tokens[max(0, i - w):i] for i in range(len(tokens))) / len(tokens)


def rep_r(tokens: Sequence) -> float:
    """The share of tokens inside a repeated snippet: positions i whose bigram (t_i, t_i+1) occurs
    at another position too (Fu et al., 2021)."""
    if len(tokens) < 2:
        return 0.0
    seen: dict[tuple, int] = {}
    for i in range(len(tokens) - 1):
        seen[(tokens[i], tokens[i + 1])] = seen.get((tokens[i], tokens[i + 1]), 0) + 1
    inside = set()
    for i in range(len(tokens) - 1):
        if seen[(tokens[i], tokens[i + 1])] > 1:
            inside.update((i, i + 1))
    return len(inside) / len(tokens)


def _norm(sentence: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", sentence.lower()).split())


def repeated_sentences(text: str, before: str = "", min_words: int = 3) -> int:
    """How many complete sentences of `text` (of at least min_words words) repeat a sentence that
    came earlier, in `before` or in `text`. An unfinished last sentence is not counted."""
    return _repeats(text, {_norm(s) for s in split_sentences(before)}, min_words)


def repeats_by_paragraph(paragraphs: Sequence[str], min_words: int = 3) -> list[int]:
    """repeated_sentences of each paragraph after the ones before it, in one pass over the text
    (a paragraph's end ends its last sentence)."""
    seen: set[str] = set()
    return [_repeats(paragraph, seen, min_words) for paragraph in paragraphs]


def _repeats(text: str, seen: set[str], min_words: int) -> int:
    """repeated_sentences of `text` after the sentences `seen`, to which its own are added."""
    sentences = split_sentences(text)
    complete = sentences[:-1] if sentences and sentences[-1][-1] not in ".!?\"'”’)" else sentences
    count = 0
    for s in complete:
        key = _norm(s)
        if len(key.split()) < min_words:
            continue
        count += key in seen
        seen.add(key)
    seen.update(_norm(s) for s in sentences[len(complete):])  # an unfinished last one is still text before the next
    return count


def continuation_metrics(tokens: Sequence[int], text: str, prefix_text: str = "") -> dict:
    return {"rep_2": rep_n(tokens, 2), "rep_3": rep_n(tokens, 3), "rep_4": rep_n(tokens, 4),
            "rep_w": rep_w(tokens), "rep_r": rep_r(tokens),
            "sentence_repetition": float(repeated_sentences(text, prefix_text) > 0)}
