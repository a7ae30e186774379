"""Names and things for an instruction's pronouns, from the story's memory (generation/resolve.py):
the people and their genders on the real tagger and name list; "it", on the real model, is in test_sca.py."""

from __future__ import annotations

from generation.resolve import FEMALE, MALE, people, resolve, things

SUMMARY = ("Mara, the keeper of Greyhaven lighthouse, found a brass key inside a bottle on the beach. "
           "Her brother Tomas wants to sell the lighthouse and they quarrelled about it.")
LAST = "Mara turned the brass key over in her palm while the lamp swept the dark water."


def test_people_are_found_with_their_genders_and_places_are_not_people():
    cast = {p.name: p for p in people(SUMMARY, LAST)}
    assert set(cast) == {"Mara", "Tomas"}  # not Greyhaven: it names the lighthouse
    assert cast["Mara"].gender == FEMALE and cast["Tomas"].gender == MALE
    assert cast["Mara"].salience > cast["Tomas"].salience  # the last paragraph counts double


def test_titles_roles_and_sentence_openers():
    cast = {p.name: p.gender for p in people(
        "Wren, a shepherd girl, met Old Soot at dawn. Madame Ilse Varga bought the circus. Snow fell on "
        "Mr. Harlan's roof. Someone knocked. Soldiers of Aster marched on Sunday.")}
    assert cast["Wren"] == FEMALE  # the name list says male; the apposition wins
    assert cast["Madame Varga"] == FEMALE and cast["Mr Harlan"] == MALE
    assert not {"Someone", "Soldiers", "Sunday", "Aster"} & set(cast)


def test_first_pronouns_become_names_and_later_ones_stay():
    (found,) = resolve("She takes it up there after the thing with him, and then she sees what it opens.",
                       SUMMARY, LAST)
    assert found.text == "Mara takes it up there after the thing with Tomas, and then she sees what it opens."
    assert [(r.pronoun, r.referent) for r in found.resolutions] == [("She", "Mara"), ("him", "Tomas")]


def test_possessives_and_contractions():
    assert resolve("It is his boat and her choice.", SUMMARY, LAST)[0].text == "It is Tomas's boat and Mara's choice."
    assert resolve("They argue about telling him or her, and why.", SUMMARY, LAST)[0].text == \
        "They argue about telling Tomas or Mara, and why."
    assert resolve("So he's angry.", SUMMARY, LAST)[0].text == "So Tomas is angry."


def test_nothing_to_resolve_gives_no_candidate():
    assert resolve("The storm breaks over the island at night.", SUMMARY, LAST) == []
    assert resolve("She runs.", "The storm broke.", "") == []  # nobody to name


def test_things_are_concrete_and_not_people():
    found = things(SUMMARY, LAST)
    assert "brass key" in found and "lamp" in found
    assert "keeper" not in found and "brother" not in found


def test_a_possessive_is_not_a_thing():
    found = things("The recording says the station's AI will vent the air.", "The station's lights blinked.")
    assert "station's" not in found and all(not f.endswith("'s") for f in found)
