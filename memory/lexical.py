"""BM25 over memory entries' words, beside the vector index.

A small sentence embedder misses facts a word match finds at once (a plan naming "the wine"
and an entry about "a wine cellar" among hundreds of paragraphs about drinks); retrieval fuses
both rankings. Like the vector index, this one lives in memory, is keyed by entry id, and is
kept in step with the database by LongTermMemory.sync."""

from __future__ import annotations

import math
import re
from collections import Counter

# Words too common to say what a passage is about (and the verbs plans are made of).
STOP_WORDS = frozenset("""a an and are as at be been but by can could did do does for from had has have he her hers
him his how i if in into is it its me my no not of off on or our out she so some than that the their them then there
these they this those to too up us was we were what when where which while who whom why will with would you your
said says one all about over just like very more most also again back down only own same such any each few other
""".split())
_WORD = re.compile(r"\w+")


def stem(word: str) -> str:
    """Plural to singular, cautiously: "trophies" -> "trophy", "glasses" -> "glass", "wines" ->
    "wine", "boxes" -> "box"; "times" stays apart from "Tim", "glass" and "kiss" are left alone.
    Verb endings are not touched: cutting them makes more false matches than it finds."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """Lower-cased words without stop words, plurals made singular."""
    return [stem(word) for word in _WORD.findall(text.lower()) if word not in STOP_WORDS and len(word) > 1]


class LexicalIndex:
    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self._postings: dict[str, dict[int, int]] = {}  # term -> entry id -> count
        self._terms: dict[int, tuple[str, ...]] = {}  # entry id -> its distinct terms (for removal)
        self._lengths: dict[int, int] = {}
        self._total = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def add(self, ids, texts) -> None:
        for entry_id, text in zip(ids, texts):
            entry_id = int(entry_id)
            if entry_id in self._lengths:
                self.remove([entry_id])
            counts = Counter(terms(text))
            for term, count in counts.items():
                self._postings.setdefault(term, {})[entry_id] = count
            self._terms[entry_id] = tuple(counts)
            self._lengths[entry_id] = length = sum(counts.values())
            self._total += length

    def remove(self, ids) -> None:
        for entry_id in ids:
            entry_id = int(entry_id)
            for term in self._terms.pop(entry_id, ()):
                postings = self._postings[term]
                del postings[entry_id]
                if not postings:
                    del self._postings[term]
            self._total -= self._lengths.pop(entry_id, 0)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Up to k (entry id, BM25 score) pairs, best first; entries sharing no word are not returned."""
        if not self._lengths or k <= 0:
            return []
        n, average = len(self._lengths), self._total / len(self._lengths) or 1.0
        scores: dict[int, float] = {}
        for term in set(terms(query)):
            postings = self._postings.get(term)
            if not postings:
                continue
            idf = math.log(1 + (n - len(postings) + 0.5) / (len(postings) + 0.5))
            for entry_id, count in postings.items():
                norm = self.k1 * (1 - self.b + self.b * self._lengths[entry_id] / average)
                scores[entry_id] = scores.get(entry_id, 0.0) + idf * count * (self.k1 + 1) / (count + norm)
        return sorted(scores.items(), key=lambda item: -item[1])[:k]
