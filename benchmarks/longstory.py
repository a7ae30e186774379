"""A synthetic long story for measuring long-term memory: filler paragraphs from assets/texts
(The Great Gatsby and WikiText-2), with 20 distinct facts planted in the first 20 steps, and for each fact a
plan (what a writer would ask for later) that needs it. Used by benchmarks/memory_recall.py and
tests/test_recall.py.

The facts use The Great Gatsby's own people and places, so the filler around them (the novel)
competes with them for retrieval; the plans name the subject of a fact but never its answer."""

from __future__ import annotations

import re
from pathlib import Path

FACTS = [
    ("Jordan keeps her golf trophies locked in a cedar chest at her aunt's house in Louisville.",
     "Nick asks Jordan where she keeps her golf trophies."),
    ("Gatsby's hydroplane is moored at the end of his dock, painted the green of the light across the bay.",
     "Gatsby takes Nick out on the hydroplane."),
    ("Meyer Wolfshiem's cufflinks were carved from a walrus tusk he won at cards in Saratoga.",
     "Nick looks closely at Wolfshiem's cufflinks."),
    ("Tom's polo pony, a grey mare named Duchess, went lame after the match at Lake Forest.",
     "Tom complains about his polo pony."),
    ("Daisy's daughter Pammy is allergic to strawberries and breaks out in hives at every picnic.",
     "Daisy plans a picnic with Pammy."),
    ("Nick's licence to sell bonds was issued in Chicago on the third of May and expires next spring.",
     "Nick worries about his licence to sell bonds."),
    ("Myrtle hides the money Tom gives her inside a hatbox on the top shelf of the apartment closet.",
     "Myrtle needs money and goes to the closet of the apartment."),
    ("George Wilson keeps a loaded revolver in the drawer under the cash register of his garage.",
     "Wilson goes behind the counter of his garage."),
    ("Gatsby's butler, a Swede named Olsen, once served as a cook on a whaling ship off Greenland.",
     "Nick talks with Gatsby's butler in the kitchen."),
    ("Jordan's coupé has a cracked left headlight from the night she drove into a hedge near Southampton.",
     "Jordan drives Nick home at night in her coupé."),
    ("Klipspringer owes Gatsby four hundred dollars for the piano he never paid for.",
     "Klipspringer plays the piano at Gatsby's house."),
    ("The Buchanans' house has a secret wine cellar behind a false wall in the pantry.",
     "Tom goes to fetch a bottle of wine for the guests."),
    ("Nick's Finnish housekeeper says the east bedroom is haunted and refuses to clean it.",
     "Nick asks his housekeeper to clean the bedrooms."),
    ("Catherine, Myrtle's sister, wears a silver bracelet engraved with the words Monte Carlo.",
     "Catherine shows off her jewellery at the party."),
    ("Gatsby's first job was digging clams on the shore of Lake Superior for ten cents a bucket.",
     "Gatsby remembers the first job he ever had."),
    ("The valley of ashes floods every April, and the trains then wait an hour at the wooden bridge.",
     "Nick takes the train through the valley of ashes in the spring."),
    ("Daisy kept Gatsby's letters from the war in a shoebox tied with a blue ribbon under her bed.",
     "Daisy looks for the letters Gatsby wrote to her during the war."),
    ("Owl Eyes, the man from Gatsby's library, is a retired professor of Greek from Princeton.",
     "Nick meets the man with the owl-eyed spectacles again."),
    ("Tom broke his little finger boxing at Yale, and it still bends to the left.",
     "Tom's hands are shown as he argues with Gatsby."),
    ("Gatsby's gardener grows blue roses in a greenhouse hidden behind the tennis court.",
     "Nick walks past the tennis court toward Gatsby's greenhouse."),
]


# The Great Gatsby and WikiText-2's validation split, shipped in the repository with their licences
TEXTS = Path(__file__).resolve().parents[1] / "assets" / "texts"


def _merge(pieces: list[str], words: int) -> list[str]:
    """Consecutive pieces joined into paragraphs of at least `words` words."""
    paragraphs, current = [], []
    for piece in pieces:
        current.append(piece)
        if sum(len(p.split()) for p in current) >= words:
            paragraphs.append(" ".join(current))
            current = []
    return paragraphs


def gatsby_paragraphs(words: int = 110) -> list[str]:
    text = (TEXTS / "the-great-gatsby.txt").read_text(encoding="utf-8")
    text = text.split("*** START OF")[1].split("\n", 1)[1].split("*** END OF")[0]
    text = text[text.index("In my younger and more vulnerable years"):]
    pieces = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return _merge([p for p in pieces if len(p.split()) > 3 and not re.fullmatch(r"[IVX]+", p)], words)


def wikitext_paragraphs(words: int = 110) -> list[str]:
    lines = (TEXTS / "wikitext-2-valid.txt").read_text(encoding="utf-8").splitlines()
    pieces = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("="):
            continue
        line = re.sub(r" @(.)@ ", r"\1", line).replace(" , ", ", ").replace(" . ", ". ").replace("<unk>", "thing")
        pieces.append(line)
    return _merge(pieces, words)


def filler(count: int) -> list[str]:
    """`count` paragraphs: the novel's, then Wikipedia's when the novel runs out."""
    paragraphs = gatsby_paragraphs()
    if count > len(paragraphs):
        paragraphs += wikitext_paragraphs()
    if count > len(paragraphs):
        raise ValueError(f"only {len(paragraphs)} filler paragraphs are available, not {count}")
    return paragraphs[:count]


def planted(paragraph: str, fact: str) -> str:
    """The paragraph with the fact as a sentence in its middle."""
    sentences = re.split(r"(?<=[.!?”])\s+", paragraph)
    middle = len(sentences) // 2
    return " ".join(sentences[:middle] + [fact] + sentences[middle:])


def story(length: int) -> list[str]:
    """A story of `length` paragraphs whose first 20 hold the 20 facts."""
    paragraphs = filler(length)
    for n, (fact, _) in enumerate(FACTS[:length]):
        paragraphs[n] = planted(paragraphs[n], fact)
    return paragraphs
