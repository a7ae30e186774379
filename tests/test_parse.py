import pytest

from generation import parse
from common.errors import ParseError


def test_title_drops_preamble_label_and_quotes():
    assert parse.parse_title('Sure! Here is a title:\n"The Last Light".') == "The Last Light"
    assert parse.parse_title("Title: The Long Lost Colony\nMore text") == "The Long Lost Colony"


def test_a_long_title_keeps_its_main_part():
    raw = "The Lighthouse: A Story of Hope, Loss and the Sea That Would Not Let Her Go Home Again"
    assert parse.parse_title(raw) == "The Lighthouse"


@pytest.mark.parametrize("raw", ["", "   \n  ", "**\n", " ".join(["word"] * 20)])
def test_title_rejects_empty_or_long(raw):
    with pytest.raises(ParseError):
        parse.parse_title(raw)


def test_paragraph_joins_lines_and_cuts_unfinished_sentence():
    raw = "He walked.\nShe ran " + "far " * 70 + "away. Then the"
    text = parse.parse_paragraph(raw, min_words=60)
    assert "\n" not in text
    assert text.endswith("away.")
    assert text.startswith("He walked. She ran")


def test_paragraph_too_short_is_an_error():
    with pytest.raises(ParseError, match="at least 60"):
        parse.parse_paragraph("Only a few words here.", min_words=60)


def test_paragraph_too_long_is_cut_at_a_sentence_end():
    raw = ("This sentence has exactly seven words here. " * 40).strip()
    text = parse.parse_paragraph(raw, min_words=10, max_words=100)
    assert len(text.split()) <= 100
    assert text.endswith("here.")


def test_summary_limits_words():
    raw = "Here is the summary:\n" + "Mara found a letter in a bottle on the rocks. " * 40
    text = parse.parse_summary(raw, max_words=250)
    assert len(text.split()) <= 250
    assert not text.lower().startswith("here is")


def test_plan_takes_first_sentence_and_capitalises():
    assert parse.parse_plan(" mara rows out to the reef. Then she sleeps.") == "Mara rows out to the reef."


def test_plan_keeps_abbreviations_inside_a_sentence():
    assert parse.parse_plan(" Dr. Lee examines the letter under a lamp. Next") == "Dr. Lee examines the letter under a lamp."


def test_plan_long_sentence_cut_at_a_late_comma_or_a_word():
    at_comma = parse.parse_plan(" Mara runs " + "and runs " * 15 + "far, " + "and runs " * 30 + "home.")
    assert at_comma.endswith("far.") and len(at_comma.split()) <= 45
    at_word = parse.parse_plan(" Mara runs, " + "and runs " * 30 + "home.", max_words=45)
    assert at_word.endswith(" …") and len(at_word.split()) == 46


def test_plan_too_short_is_an_error():
    with pytest.raises(ParseError):
        parse.parse_plan(" Yes.")


def test_first_sentence_done():
    assert not parse.first_sentence_done(" Mara runs. She")
    assert parse.first_sentence_done(" Mara runs to the old village. She")


def test_similar_detects_near_duplicates():
    assert parse.similar("Mara rows to the reef at dawn.", "At dawn Mara rows to the reef.")
    assert not parse.similar("Mara rows to the reef.", "A storm breaks the lamp.")


def test_a_paragraph_copying_the_previous_one_is_refused():
    previous = "The fog rolled in around them as they watched the sun set across the sea. " * 5
    with pytest.raises(ParseError, match="repeats the previous"):
        parse.parse_paragraph(previous + " Then something new.", min_words=10, previous=previous)
    fresh = "Mara rowed to the village at dawn and knocked on the door of the bakery. " * 5
    assert parse.parse_paragraph(fresh, min_words=10, previous=previous)


def test_copied_share():
    assert parse.copied("a b c d e", "a b c d e") == 1.0
    assert parse.copied("a b c d e", "x y z w") == 0.0


@pytest.mark.parametrize("raw", [" I'll delve deeper into the final scene of the story.",
                                 " let's explore what the ending could be like.",
                                 " You read how a writer found a hidden painting."])
def test_plans_about_the_writing_are_refused(raw):
    with pytest.raises(ParseError, match="talks about the writing"):
        parse.parse_plan(raw)


def test_a_summary_that_only_copies_the_paragraph_is_refused():
    paragraph = "In the days that followed, the sea took on a different tone, one not lost to the heat. " * 3
    with pytest.raises(ParseError, match="copies the new paragraph"):
        parse.parse_summary(paragraph, paragraph=paragraph)
    assert parse.parse_summary("Mara found a letter and rowed to the village to ask Tomas about it.",
                               paragraph=paragraph)


ONE_CALL = """Output Paragraph:
{paragraph}

Output Memory:
Rationale: The reef matters later.
Updated Memory: Mara found a letter from the future and rowed to the reef.

Output Instruction:
Instruction 1: Mara finds the wreck of the Kestrel.
Instruction 2: A storm drives her back to the island.
Instruction 3: Tomas waits for her on the quay with news.
"""


def test_one_call_output_is_parsed_section_by_section():
    paragraph = "Mara rowed out past the harbour wall and into the grey swell of the open sea. " * 6
    out = parse.parse_one_call(ONE_CALL.format(paragraph=paragraph))
    assert out["paragraph"] == " ".join(paragraph.split())
    assert out["rationale"] == "The reef matters later."
    assert out["short_memory"].startswith("Mara found a letter")
    assert out["plans"][2] == "Tomas waits for her on the quay with news."


@pytest.mark.parametrize("broken, message", [
    (lambda t: t.replace("Output Memory:", "Memory:"), "expected format"),
    (lambda t: t.replace("Instruction 3: Tomas waits for her on the quay with news.", "Instruction 3:"), "format"),
    (lambda t: t.replace("Tomas waits for her on the quay with news.", "A storm drives her back to the island."),
     "repeats"),
])
def test_one_call_output_missing_or_repeated_sections_is_refused(broken, message):
    paragraph = "Mara rowed out past the harbour wall and into the grey swell of the open sea. " * 6
    with pytest.raises(ParseError, match=message):
        parse.parse_one_call(broken(ONE_CALL.format(paragraph=paragraph)))


def test_a_long_plan_without_a_comma_is_cut_at_a_word():
    plan = parse.parse_plan(" Mara runs " + "and runs " * 40 + "home.")
    assert plan.endswith(" …") and "," not in plan and len(plan.split()) == 46
