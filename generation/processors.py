"""Decoding processors, in transformers' LogitsProcessor shape: arguments checked in __init__,
__call__(input_ids, scores) returns a new tensor; and `for_decoding`, the factory that turns a
story's anti-repetition settings (a `Decoding`) into the list of them."""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

from generation.backend import Decoding


class AllowOnly(LogitsProcessor):
    """Constrained choice: every token but `token_ids` gets -inf, so the model must pick one of them
    (the one it finds most likely under greedy decoding)."""

    def __init__(self, token_ids: list[int]):
        if not token_ids or not all(isinstance(t, int) and t >= 0 for t in token_ids):
            raise ValueError(f"token_ids must be a non-empty list of token ids, got {token_ids!r}")
        self.token_ids = sorted(set(token_ids))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = torch.full_like(scores, float("-inf"))
        allowed[:, self.token_ids] = scores[:, self.token_ids]
        return allowed


class BanAtStart(LogitsProcessor):
    """The reply's first token may not be one of `token_ids`: at the step where the sequences are
    `start` tokens long (the prompt), those tokens get -inf; later steps are untouched. Keeps a
    small model from opening a plan with "We see..." or "I will..." instead of the story."""

    def __init__(self, token_ids: list[int], start: int):
        if not all(isinstance(t, int) and t >= 0 for t in token_ids):
            raise ValueError(f"token_ids must be token ids, got {token_ids!r}")
        if start < 0:
            raise ValueError(f"start must be at least 0, got {start}")
        self.token_ids, self.start = sorted(set(token_ids)), start

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] != self.start or not self.token_ids:
            return scores
        out = scores.clone()
        out[:, self.token_ids] = float("-inf")
        return out


def _row_ids(input_ids: torch.LongTensor, row: int) -> np.ndarray:
    return np.asarray(input_ids[row].tolist(), dtype=np.int64)


class SentenceRepetitionGuard(LogitsProcessor):
    """DITTO's decode-time companion. While the sentence being written matches the start of an
    earlier sentence of the context (at least `min_match` tokens), the token that would continue
    the copy has its probability multiplied by lam**k, k being how many earlier sentences it
    would go on copying. So a sentence seen once gets lam, twice lam**2: the more a sentence
    repeats, the harder copying it again becomes, which is the self-reinforcement DITTO breaks.

    Sentences are told apart by `boundary_ids`: the tokens whose text ends a sentence (see
    sentence_end_ids), so the split follows the text, not one token id. Given the tokens that
    end clauses too (sentence_end_ids(..., clauses=True)), clauses count as sentences: a loop
    that comes back mid-sentence is caught as well. Only text from position `context_start` on
    counts (the app passes the prompt's length: a reply may restate its prompt, not itself).

    A loop with no sentence or clause mark in it ("a woman who is a woman who is ...") has no
    earlier sentence to match, so a second rule, in the same spirit, treats the repeating span
    as the sentence: when the text ends with a span of `period` tokens (at most `max_period`)
    written k times in a row (at least `min_loop` tokens in the repeats), the token that would
    start it once more gets lam**k. Set max_period to 0 for the sentence rule alone."""

    def __init__(self, boundary_ids, lam: float = 0.5, min_match: int = 2, context_start: int = 0,
                 max_period: int = 32, min_loop: int = 6):
        if not 0 < lam <= 1:
            raise ValueError(f"lambda must be in (0, 1], got {lam}")
        if min_match < 1:
            raise ValueError(f"min_match must be at least 1, got {min_match}")
        boundary_ids = sorted(set(int(t) for t in boundary_ids))
        if not boundary_ids or boundary_ids[0] < 0:
            raise ValueError("boundary_ids must be a non-empty set of token ids")
        self.boundary = np.zeros(boundary_ids[-1] + 1, dtype=bool)
        self.boundary[boundary_ids] = True
        self.log_lam = float(np.log(lam))
        self.min_match = min_match
        self.context_start = max(0, int(context_start))
        if max_period < 0 or min_loop < 2:
            raise ValueError(f"max_period must be >= 0 and min_loop >= 2, got {max_period}, {min_loop}")
        self.max_period, self.min_loop = max_period, min_loop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        if self.log_lam == 0.0:
            return out
        for row in range(input_ids.shape[0]):
            ids = _row_ids(input_ids, row)[self.context_start:]
            for token, k in self._loops(ids):
                out[row, token] += k * self.log_lam
            known = ids < len(self.boundary)  # ids above the highest boundary id end nothing
            ends = np.flatnonzero(known)[self.boundary[ids[known]]]
            start = int(ends[-1]) + 1 if len(ends) else 0  # where the sentence being written began
            current = ids[start:]
            m = len(current)
            if m < self.min_match or start == 0:
                continue
            starts = np.concatenate([[0], ends + 1])  # where each earlier sentence began
            starts = starts[starts + m < start]  # with room for the copy and its next token before `start`
            if not len(starts):
                continue
            windows = np.lib.stride_tricks.sliding_window_view(ids[:start], m)[starts]
            copies = starts[(windows == current).all(axis=1)]
            if len(copies):
                tokens, counts = np.unique(ids[copies + m], return_counts=True)
                out[row, torch.as_tensor(tokens)] += torch.as_tensor(counts, dtype=out.dtype) * self.log_lam
        return out


    def _loops(self, ids: np.ndarray) -> list[tuple[int, int]]:
        """(token that would start the repeating span again, times the span was repeated) for
        the shortest period the text ends repeating, if any."""
        tail = ids[-(self.max_period * 8):]
        for period in range(1, min(self.max_period, len(tail) // 2) + 1):
            same = tail[period:] == tail[:-period]  # same[i]: tail[i + period] repeats tail[i]
            run = len(same) - int(np.flatnonzero(~same)[-1]) - 1 if not same.all() else len(same)
            if run >= max(period, self.min_loop):
                return [(int(tail[-period]), run // period)]
        return []


class DRY(LogitsProcessor):
    """"Don't Repeat Yourself" (p-e-w, 2024): a token that would extend a sequence already in the
    context gets its logit lowered by multiplier * base ** (n - allowed_length), n being the
    length of the longest such repeated sequence it would continue (n >= allowed_length).
    Matching does not cross `breaker_ids` (newlines, quotes), so dialogue can repeat names."""

    def __init__(self, multiplier: float = 0.8, base: float = 1.75, allowed_length: int = 2,
                 breaker_ids=(), max_match: int = 64):
        if multiplier < 0 or base < 1 or allowed_length < 1 or max_match < allowed_length:
            raise ValueError("DRY needs multiplier >= 0, base >= 1, allowed_length >= 1 and "
                             f"max_match >= allowed_length (got {multiplier}, {base}, {allowed_length}, {max_match})")
        self.multiplier, self.base, self.allowed_length = multiplier, base, allowed_length
        self.breakers = frozenset(int(t) for t in breaker_ids)
        self.max_match = max_match

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        if self.multiplier == 0:
            return out
        for row in range(input_ids.shape[0]):
            ids = _row_ids(input_ids, row)
            if len(ids) < 2 or int(ids[-1]) in self.breakers:
                continue
            longest: dict[int, int] = {}  # next token -> the longest match it would continue
            for i in np.flatnonzero(ids[:-1] == ids[-1]):
                n = 0
                while (n < self.max_match and i - n >= 0 and ids[i - n] == ids[len(ids) - 1 - n]
                       and int(ids[i - n]) not in self.breakers and i - n != len(ids) - 1 - n):
                    n += 1
                token = int(ids[i + 1])
                if n >= self.allowed_length and n > longest.get(token, 0):
                    longest[token] = n
            for token, n in longest.items():
                out[row, token] -= self.multiplier * self.base ** (n - self.allowed_length)
        return out


def sentence_end_ids(tokenizer, clauses: bool = False) -> list[int]:
    """The ids of tokens whose text ends a sentence (., !, ?, … maybe followed by a closing quote
    or bracket) or holds a line break; with `clauses`, also those ending a clause (, ; :)."""
    import re

    ending = re.compile(r"[.!?…" + (",;:" if clauses else "") + r"][\"'”’)\]]*\s*$|\n")
    found = []
    for token, token_id in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token])
        if ending.search(text):
            found.append(token_id)
    return sorted(found)


def breaker_ids(tokenizer) -> list[int]:
    """The ids of tokens holding a line break or a quotation mark: DRY's sequence breakers, so
    dialogue and paragraph starts may repeat."""
    found = []
    for token, token_id in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token])
        if any(c in text for c in "\n\"“”"):
            found.append(token_id)
    return sorted(found)


def for_decoding(decoding: Decoding, boundary_ids, breaker_ids, default_penalty: float = 1.0,
                 context_start: int = 0) -> list[LogitsProcessor]:
    """These settings as LogitsProcessors, in the order they apply: transformers' repetition
    penalty (the decoding's, or `default_penalty` when it is None) and no-repeat n-grams, then the
    sentence-repetition guard (sentences and clauses split at `boundary_ids`, the text from
    `context_start` on) and DRY (matches broken at `breaker_ids`)."""
    decoding.check()
    penalty = default_penalty if decoding.repetition_penalty is None else decoding.repetition_penalty
    out: list[LogitsProcessor] = []
    if penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(penalty))
    if decoding.no_repeat_ngram_size:
        out.append(NoRepeatNGramLogitsProcessor(decoding.no_repeat_ngram_size))
    if decoding.guard and decoding.guard_lambda < 1:
        out.append(SentenceRepetitionGuard(boundary_ids, decoding.guard_lambda, context_start=context_start))
    if decoding.dry_multiplier > 0:
        out.append(DRY(decoding.dry_multiplier, decoding.dry_base, decoding.dry_allowed_length, breaker_ids))
    return out
