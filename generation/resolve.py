"""Names and things for the pronouns of a vague instruction, found in the story's memory.

"She takes it up there after the thing with him" means something only next to the story: SCA's
paraphrases should say "Mara takes the brass key ...". The embedded 135M model cannot write such a
paraphrase (it rewrites the summary instead), so `resolve` builds these candidates itself and SCA's
Integrated Gradients ranks them with the others:

- people: the runs of proper nouns in the context (the short-term memory and the last paragraph)
  that are not places (after "in", "of", "at" ... or before a common noun). Each gets a gender from,
  in order: a title (Madame, Mr, Countess ...), a role noun beside the name ("her brother Tomas",
  "Wren, a shepherd girl"), the pronouns of the context's sentences that name only that person,
  then the first-name list of the `gender-guesser` package. The first "she/her" of the instruction
  becomes the most salient female person (mentions, the last paragraph counting double), the first
  "he/him/his" the most salient male one; later pronouns stay, as a writer would leave them.
- things: the first "it" becomes the concrete noun phrase of the context (Brysbaert concreteness
  of its head at least 4, not a person's role) that the model itself finds likeliest as the answer
  to 'In the instruction, what is "it"?', scored by its mean token log-probability.

Nothing here changes the person's text: the results are candidates for them to pick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from generation.measures import _package_file, _rating, _ratings, _tagger, tag

FEMALE = "f"
MALE = "m"
_FAMILY = {"she": FEMALE, "her": FEMALE, "he": MALE, "him": MALE, "his": MALE}
_TITLES = {
    FEMALE: {"mrs", "ms", "miss", "madame", "madam", "mme", "lady", "queen", "countess", "duchess", "princess",
             "sister", "aunt", "frau", "dame", "mother", "grandmother", "empress"},
    MALE: {"mr", "herr", "sir", "lord", "king", "count", "duke", "prince", "brother", "uncle", "monsieur",
           "father", "grandfather", "emperor"},
}
_ROLES = {
    FEMALE: {"girl", "woman", "daughter", "wife", "sister", "mother", "widow", "queen", "aunt", "niece",
             "grandmother", "lady", "actress", "waitress", "princess", "countess", "heroine", "granddaughter",
             "girlfriend", "bride", "nun", "maid", "witch"},
    MALE: {"boy", "man", "son", "husband", "brother", "father", "widower", "king", "uncle", "nephew",
           "grandfather", "gentleman", "prince", "count", "hero", "grandson", "boyfriend", "groom", "monk",
           "wizard"},
}
# nouns for people, never "it"
_PEOPLE = {"person", "people", "someone", "anyone", "everyone", "nobody", "keeper", "baker", "mayor", "captain",
           "doctor", "nurse", "detective", "thief", "guard", "soldier", "friend", "stranger", "child", "elder",
           "patient", "owner", "apprentice", "collector", "director", "shepherd", "miller", "translator",
           "acrobat", "ringmaster", "clockmaker", "commander", "team", "crew", "villager", "teacher", "student",
           *_ROLES[FEMALE], *_ROLES[MALE]}
_PLACE_BEFORE = {"in", "at", "of", "to", "from", "near", "into", "on", "across", "toward", "towards"}
_COMMON = {"NN", "NNS"}
_PROPER = {"NNP", "NNPS"}
_CALENDAR = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "sundays", "january",
             "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
             "december", "christmas", "easter"}
MIN_CONCRETE = 4.0  # Brysbaert rating of the head noun of a thing "it" may name
MAX_THINGS = 8  # noun phrases the model scores for "it"


@dataclass(frozen=True)
class Person:
    name: str
    gender: str | None
    salience: float


@dataclass(frozen=True)
class Resolution:
    pronoun: str  # as written in the instruction
    referent: str  # what the candidate says instead
    kind: str  # "person" or "thing"


@dataclass(frozen=True)
class Resolved:
    text: str
    resolutions: tuple[Resolution, ...]


@cache
def _first_names():
    import gender_guesser.detector

    _package_file("gender_guesser", "data/nam_dict.txt")  # a clear message when the package is missing
    return gender_guesser.detector.Detector(case_sensitive=False)


def _common_word(word: str, ratings: dict) -> bool:
    """A capitalised sentence opener that is an English word, not a name: in the tagger's list of
    unambiguous words ("Someone", "Old"), or rated and unknown as a first name ("Soldiers")."""
    lower = word.lower()
    if lower in _tagger().tagdict:
        return True
    return _rating(lower, ratings) is not None and _first_names().get_gender(word) == "unknown"


def _guess(name: str) -> str | None:
    answer = _first_names().get_gender(name.split()[0])
    return FEMALE if answer in ("female", "mostly_female") else MALE if answer in ("male", "mostly_male") else None


_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "mt", "prof", "sr", "jr"}
_RANKS = {"dr", "doctor", "captain", "commander", "professor", "prof", "st", "saint", "sergeant", "general",
          "colonel", "inspector", "detective", "officer", "judge", "father", "sister"}


def _sentences(text: str) -> list[list[tuple[str, str]]]:
    """The tagged tokens of each sentence ("Mr." stays one token)."""
    out, current = [], []
    for word, t in tag(text):
        if word == "." and current and current[-1][0].lower() in _ABBREVIATIONS:
            current[-1] = (current[-1][0] + ".", current[-1][1])
            continue
        current.append((word, t))
        if word in ".!?":
            out.append(current)
            current = []
    return out + ([current] if current else [])


def _capitalised_runs(sentence: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """(start, end) of each run of capitalised nouns (the tagger reads some names as common nouns)."""
    runs, i = [], 0
    is_name = lambda k: sentence[k][1] in _PROPER | _COMMON and sentence[k][0][:1].isupper()  # noqa: E731
    while i < len(sentence):
        if is_name(i):
            j = i
            while j < len(sentence) and is_name(j):
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    return runs


def _clean(word: str) -> str:
    return re.sub(r"['’]s$", "", word).rstrip(".")


@dataclass
class _Seen:
    name: str
    weight: float = 0.0
    gender: str | None = None  # from a title or a role noun: the surest
    given: str | None = None  # a first name the name list may know
    person: bool = False  # seen at least once where a person's name stands
    votes: list[int] = field(default_factory=lambda: [0, 0])  # "she", "he" in sentences naming only them


def people(context: str, last: str = "") -> list[Person]:
    """The people of the context, most salient first (module docstring)."""
    seen: dict[str, _Seen] = {}
    ratings = _ratings()
    for weight, text in ((1.0, context), (2.0, last)):
        for sentence in _sentences(text):
            here = []
            for start, end in _capitalised_runs(sentence):
                words = [_clean(w) for w, _ in sentence[start:end]]
                title, ranked = None, False
                while words and (words[0].lower() in _RANKS or any(words[0].lower() in t for t in _TITLES.values())):
                    title = title or next((g for g, t in _TITLES.items() if words[0].lower() in t), None)
                    ranked = True
                    words = words[1:]
                if not words or len(words[0]) < 2 or words[0].isupper():
                    continue  # an initial, an acronym, a bare title
                before = sentence[start - 1][0].lower() if start else ""
                first = start == 0 or before in ("\"", "'", "“", "‘", "(")
                common = first and not ranked and _common_word(words[0], ratings)
                if words[0].lower() in _CALENDAR:
                    continue
                person = ranked or (not common and before not in _PLACE_BEFORE | {"the", "a", "an"})
                if common and title is None:
                    continue  # a capitalised first word ("Rain drummed", "Someone dropped")
                if title:
                    display = _clean(sentence[start][0]) + " " + words[-1]  # "Madame Varga", "Mr Harlan"
                elif len(words) > 1 and _guess(words[0]) is not None:
                    display = words[0]  # "Yuki" for "Yuki Sato", as a writer would say it again
                else:
                    display = " ".join(words)
                key = next((k for k in seen if set(display.split()) & set(k.split()) - set(_all_titles())), display)
                entry = seen.setdefault(key, _Seen(key))
                entry.weight += weight
                entry.person |= person
                entry.gender = entry.gender or title or _role_gender(sentence, start, end)
                if not ranked or len(words) > 1:
                    entry.given = entry.given or words[0]
                here.append(key)
            if len(set(here)) == 1:
                lower = [w.lower() for w, _ in sentence]
                seen[here[0]].votes[0] += sum(w in ("she", "herself") for w in lower)
                seen[here[0]].votes[1] += sum(w in ("he", "himself") for w in lower)
    found = []
    for rank, entry in enumerate(e for e in seen.values() if e.person):
        gender = entry.gender or (_guess(entry.given) if entry.given else None)
        if gender is None and entry.votes[0] != entry.votes[1]:
            gender = FEMALE if entry.votes[0] > entry.votes[1] else MALE
        found.append(Person(entry.name, gender, entry.weight + (0.5 if rank == 0 else 0.0)))
    return sorted(found, key=lambda p: -p.salience)


@cache
def _all_titles() -> frozenset[str]:
    return frozenset(w.capitalize() for w in _RANKS | _TITLES[FEMALE] | _TITLES[MALE])


def _role_gender(sentence: list[tuple[str, str]], start: int, end: int) -> str | None:
    """A gender from a role noun just before the name ("brother Tomas") or in its apposition
    ("Wren, a shepherd girl")."""
    near = [w.lower() for w, _ in sentence[max(0, start - 2):start]]
    if end < len(sentence) and sentence[end][0] == ",":
        near += [w.lower() for w, _ in sentence[end + 1:end + 5]]
    for gender, roles in _ROLES.items():
        if any(w in roles for w in near):
            return gender
    return None


def things(context: str, last: str = "") -> list[str]:
    """Concrete noun phrases of the context that are not people, most mentioned first."""
    ratings = _ratings()
    counts: dict[str, float] = {}
    for weight, text in ((1.0, context), (2.0, last)):
        for sentence in _sentences(text):
            i = 0
            while i < len(sentence):
                if sentence[i][1] not in _COMMON:
                    i += 1
                    continue
                j = i
                while j < len(sentence) and sentence[j][1] in _COMMON:
                    j += 1
                k = i - 1 if i and sentence[i - 1][1] == "JJ" else i
                head = sentence[j - 1][0].lower()
                if head.endswith(("'s", "’s")):  # "the station's" owns the next word: not a thing itself
                    i = j
                    continue
                rating = _rating(head, ratings)
                if head not in _PEOPLE and head.rstrip("s") not in _PEOPLE and rating and rating >= MIN_CONCRETE:
                    phrase = " ".join(w for w, _ in sentence[k:j]).lower()
                    counts[phrase] = counts.get(phrase, 0.0) + weight
                i = j
    return sorted(counts, key=lambda p: -counts[p])[:MAX_THINGS]


def _likeliest(model, tokenizer, context: str, instruction: str, pronoun: str, options: list[str]) -> str:
    """The option the model finds likeliest as what `pronoun` means (mean token log-probability)."""
    import torch

    messages = [{"role": "system", "content": "You answer questions about a story."},
                {"role": "user", "content": f"{context}\n\nInstruction: {instruction}\n\nIn the instruction, "
                                            f"what is \"{pronoun}\"?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    answer = f"\"{pronoun[:1].upper() + pronoun[1:]}\" is the"
    prompt_ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
    option_ids = [tokenizer(" " + o, add_special_tokens=False)["input_ids"] for o in options]
    width = max(len(o) for o in option_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([prompt_ids + o + [pad] * (width - len(o)) for o in option_ids], device=model.device)
    with torch.no_grad():
        logits = model(ids, logits_to_keep=width + 1).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    scores = []
    for row, o in enumerate(option_ids):
        chosen = logp[row, torch.arange(len(o)), torch.tensor(o, device=logp.device)]
        scores.append(float(chosen.mean()))
    return options[max(range(len(options)), key=scores.__getitem__)]


_PRONOUN = re.compile(r"\b(she|her|he|him|his|it)(['’]s)?\b", re.I)


def resolve(instruction: str, context: str, last: str = "", model=None, tokenizer=None) -> list[Resolved]:
    """Rewordings of `instruction` with names for its first "she/her" and "he/him/his" and, given the
    model, a thing for its first "it": the people-only one first, then the one with the thing too.
    None when the instruction has no pronoun the context can fill."""
    cast = people(context, last)
    possessive_positions = _possessive_her(instruction)
    text, done, changes = instruction, set(), []
    offset = 0
    for match in _PRONOUN.finditer(instruction):
        word = match.group(1).lower()
        if word == "it" or word in done:
            continue
        gender = _FAMILY[word]
        family = "she" if gender == FEMALE else "he"
        if family in done:
            continue
        done.add(family)
        person = next((p for p in cast if p.gender == gender), None)
        if person is None:
            continue
        owner = word == "his" or (word == "her" and match.start() in possessive_positions)
        name = person.name + ("'s" if owner else "") + (" is" if match.group(2) else "")
        if match.start() == 0 or instruction[:match.start()].rstrip().endswith((".", "!", "?")):
            name = name[:1].upper() + name[1:]
        text = text[:match.start() + offset] + name + text[match.end() + offset:]
        offset += len(name) - (match.end() - match.start())
        changes.append(Resolution(match.group(0), person.name, "person"))
    found = [Resolved(text, tuple(changes))] if changes else []
    it = next((m for m in _PRONOUN.finditer(text) if m.group(1).lower() == "it"
               and not re.match(r"\s+all\b", text[m.end():])), None)  # "about it all" names no thing
    if it is not None and model is not None:
        options = things(context, last)
        if options:
            thing = _likeliest(model, tokenizer, f"{context}\n{last}".strip(), instruction, it.group(1), options)
            said = "the " + thing + (" is" if it.group(2) else "")
            if it.start() == 0 or text[:it.start()].rstrip().endswith((".", "!", "?")):
                said = said[:1].upper() + said[1:]
            found.append(Resolved(text[:it.start()] + said + text[it.end():],
                                  (*changes, Resolution(it.group(0), thing, "thing"))))
    return found


def _possessive_her(instruction: str) -> set[int]:
    """Character offsets of each "her" that owns the next word ("her brother", not "told her" or
    "or her, and")."""
    positions, tokens = set(), tag(instruction)
    cursor = 0
    for index, (word, t) in enumerate(tokens):
        at = instruction.find(word, cursor)
        cursor = at + len(word)
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        owns = following[0][:1].isalpha() and following[1] not in ("CC", "IN", "TO")
        if word.lower() == "her" and t == "PRP$" and owns:
            positions.add(at)
    return positions
