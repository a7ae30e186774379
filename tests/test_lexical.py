"""BM25 over entry texts: the stemmer, the ranking, and removal."""

from memory.lexical import LexicalIndex, stem, terms


def test_plurals_meet_their_singular_and_nothing_else():
    assert [stem(w) for w in ("trophies", "glasses", "wines", "boxes", "cellars", "churches")] == \
        ["trophy", "glass", "wine", "box", "cellar", "church"]
    assert stem("times") != stem("tim") and stem("notes") != stem("not") and stem("cares") != stem("car")
    assert [stem(w) for w in ("glass", "kiss", "bus", "this", "gas")] == ["glass", "kiss", "bus", "this", "gas"]
    assert terms("The Trophies of the house") == ["trophy", "house"]


def test_ranking_prefers_rare_shared_words_and_forgets_removed_entries():
    index = LexicalIndex()
    index.add([1, 2, 3], ["Tim opened the door.", "Three times she knocked at the door.",
                          "The wine cellar is behind the pantry wall."])
    assert [i for i, _ in index.search("Tim", 5)] == [1]
    assert [i for i, _ in index.search("a bottle of wines from the cellar", 5)] == [3]
    hits = index.search("the door", 5)
    assert {i for i, _ in hits} == {1, 2} and hits[0][1] >= hits[1][1]
    index.add([1], ["Tim climbed the stairs."])  # an entry changed: its old words are gone
    assert [i for i, _ in index.search("door", 5)] == [2]
    index.remove([2, 3])
    assert index.search("door wine", 5) == [] and len(index) == 1
    assert index.search("stairs", 0) == [] and LexicalIndex().search("anything", 3) == []
