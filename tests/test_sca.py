"""SCA prompting: parsing, scoring and bad input with a scripted backend; the measures on their
packaged data; Integrated Gradients and the whole clarify on the real embedded model."""

from __future__ import annotations

import math
import re

import pytest

from generation import parse
from common.errors import ParseError
from generation.measures import english_share, flesch, measure, syllables, tag
from generation.sca import SCASettings, SCAUnavailable, check_text, clarify, paraphrases, score_words
from common.errors import InvalidInput
from tests.fakes import ScriptedBackend

UNCLEAR = "She takes it up there after the thing with him, and then they both see what it means."
CONTEXT = ("Mara, the keeper of Greyhaven lighthouse, found a brass key in a bottle. Her brother Tomas "
           "quarrelled with her about selling the lighthouse.")


# --- parsing and scoring -------------------------------------------------------------------------

def test_a_paraphrase_is_the_first_paragraph_without_labels_or_quotes():
    raw = 'Sure! Here it is:\nRewritten instruction: "Mara carries the key up the tower."\n\nMore chatter.'
    assert parse.parse_paraphrase(raw, UNCLEAR) == "Mara carries the key up the tower."


@pytest.mark.parametrize("raw, problem", [
    ("Okay.", "at least 3"),
    ("I will rewrite the instruction for you.", "talks about the writing"),
    (UNCLEAR, "repeats the instruction"),
])
def test_unusable_paraphrases_are_refused(raw, problem):
    with pytest.raises(ParseError, match=problem):
        parse.parse_paraphrase(raw, UNCLEAR)


def test_even_full_attribution_scores_one_and_a_single_dominant_word_scores_low():
    assert score_words([0.25] * 4) == pytest.approx((1.0, 1.0))
    evenness, coverage = score_words([0.97, 0.01, 0.01, 0.01])
    assert evenness < 0.2 and coverage == 0.25
    assert score_words([1.0]) == (1.0, 1.0)
    assert score_words([0.5, 0.5, 0.0, 0.0]) == pytest.approx((math.log(2) / math.log(4), 0.5))


def test_paraphrases_are_distinct_and_bounded_by_tries():
    replies = iter(["Mara carries the key up the tower.", "Mara carries the key up the tower!",
                    "I will do it.", "Mara and Tomas climb the lighthouse with the key."])

    def reply(request):
        return next(replies, "Okay.")

    backend = ScriptedBackend(reply)
    found, problems = paraphrases(backend, UNCLEAR, CONTEXT, count=3, tries=2)
    assert found == ["Mara carries the key up the tower.", "Mara and Tomas climb the lighthouse with the key."]
    assert len(backend.requests) == 4  # paraphrase 2 failed twice and was given up
    assert any("repeats an earlier one" in p for p in problems) and any("writing" in p for p in problems)
    assert CONTEXT in backend.requests[0].messages[-1]["content"]
    hopeless = ScriptedBackend(lambda request: "Okay.")
    assert paraphrases(hopeless, UNCLEAR, count=3, tries=2)[0] == [] and len(hopeless.requests) == 6


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("   \n ", "empty"),
    ("x" * 20_000, "20,000 characters"),
    ("Ella lleva la llave al faro después de la pelea con su hermano.", "does not look like English"),
    ("灯台守は手紙を見つけた。", "does not look like English"),
])
def test_bad_instructions_get_a_clear_message(text, message):
    with pytest.raises(InvalidInput, match=message):
        check_text(text)


def test_a_backend_without_gradients_is_refused_before_any_call(embedder):
    backend = ScriptedBackend()  # like a remote server: text only
    with pytest.raises(SCAUnavailable, match="gives no gradients"):
        clarify(backend, embedder, UNCLEAR)
    assert backend.requests == []


@pytest.mark.parametrize("bad", [dict(candidates=11), dict(ig_steps=1), dict(continuation_tokens=0),
                                 dict(min_similarity=1.5)])
def test_settings_are_checked(bad):
    with pytest.raises(InvalidInput):
        SCASettings(**bad)


# --- measures ------------------------------------------------------------------------------------

def test_syllables_and_flesch_follow_the_formula():
    assert [syllables(w) for w in ("cat", "make", "table", "beautiful", "lighthouse")] == [1, 1, 2, 3, 2]
    # 4 words, 1 sentence, 4 syllables: 206.835 - 1.015 * 4 - 84.6 * 1
    assert flesch("The cat sat down.") == pytest.approx(206.835 - 1.015 * 4 - 84.6)


def test_the_tagger_formality_and_concreteness_rank_as_expected():
    assert [t for _, t in tag("The old keeper quickly climbed the stairs.")] == \
        ["DT", "JJ", "NN", "RB", "VBD", "DT", "NNS", "."]
    casual, formal = measure("Oh, I guess you just go there and do it."), \
        measure("The committee approved the annual budget of the regional library.")
    assert formal.formality > casual.formality + 20
    concrete, abstract = measure("Mara carries the brass key up the stone stairs."), \
        measure("Her hope and fear became an idea of freedom.")
    assert concrete.concreteness > 4 > 2.5 > abstract.concreteness
    assert english_share(UNCLEAR) > 0.9
    assert check_text("Zyx and Qorl fight Vrenn at the gate of Ulm.")  # invented names are not "not English"


# --- the real model ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def backend(model_folder):
    from generation.adapters import DEFAULT_ADAPTER
    from generation.local import TransformersBackend

    backend = TransformersBackend(str(model_folder), "cpu", adapter=DEFAULT_ADAPTER)
    backend.load()
    return backend


@pytest.mark.model
def test_integrated_gradients_cover_every_word_and_converge(backend):
    from generation.sca import attribute

    with backend.exclusive() as (model, tokenizer):
        rough = attribute(model, tokenizer, UNCLEAR, steps=4)
        fine = attribute(model, tokenizer, UNCLEAR, steps=32)
    assert [w for w, _ in fine.words] == UNCLEAR.split()
    assert sum(p for _, p in fine.words) == pytest.approx(1.0)
    assert fine.delta < rough.delta and fine.delta < 0.2  # completeness: more steps, smaller error
    assert fine.continuation == rough.continuation  # the same greedy target
    assert 0 < fine.comprehension <= 1
    assert not any(p.requires_grad for p in model.parameters())  # input gradients only


@pytest.mark.model
def test_resolve_lets_the_model_name_the_thing_it_means(backend):
    from generation.resolve import resolve, things
    from tests.test_resolve import LAST, SUMMARY

    with backend.exclusive() as (model, tokenizer):
        found = resolve("She takes it up there after the thing with him.", SUMMARY, LAST, model, tokenizer)
    assert len(found) == 2 and found[0].resolutions == found[1].resolutions[:2]
    thing = found[1].resolutions[-1]
    assert thing.kind == "thing" and thing.referent in things(SUMMARY, LAST)
    assert found[1].text == f"Mara takes the {thing.referent} up there after the thing with Tomas."


@pytest.mark.model
def test_clarify_ranks_the_original_and_its_paraphrases_and_keeps_the_original(backend, embedder):
    seen = []
    result = clarify(backend, embedder, UNCLEAR, CONTEXT, SCASettings(candidates=3),
                     progress=lambda done, what: seen.append((done, what)))
    texts = [c.text for c in result.candidates]
    assert UNCLEAR in texts and len(texts) == len(set(texts)) >= 3
    named = [c for c in result.candidates if c.origin.startswith("names from the story")]
    assert named and named[0].text.startswith("Mara takes") and "with Tomas" in named[0].text
    assert "She → Mara" in named[0].origin and not named[0].drifted
    kept = [c for c in result.candidates if not c.drifted]
    assert kept and all(c.similarity >= 0.4 or c.origin == "yours" for c in kept)
    assert [c.comprehension for c in kept] == sorted((c.comprehension for c in kept), reverse=True)
    assert result.candidates[: len(kept)] == kept  # the drifted ones come last
    assert all(c.measures["readability"] is not None for c in result.candidates)
    assert seen[-1] == (1.0, "done") and [d for d, _ in seen] == sorted(d for d, _ in seen)
    row = result.to_dict()["candidates"][0]
    assert {"comprehension", "evenness", "coverage", "words", "formality", "concreteness"} <= set(row)


@pytest.mark.model
def test_a_text_only_model_paraphrases_and_the_local_model_scores(backend, embedder):
    """As with a model behind a server: the paraphrases come from it, the gradients from the local model."""
    written = iter([" Mara carries the brass key up to the lamp room after her quarrel with Tomas.",
                    " After arguing with Tomas, Mara brings the brass key to the top of the lighthouse."])
    served = ScriptedBackend(lambda request: next(written, " Mara goes up.")
                             if "Instruction:" in request.messages[-1]["content"] else None)
    result = clarify(served, embedder, UNCLEAR, CONTEXT, SCASettings(candidates=4), scorer=backend)  # 2 named
    paraphrased = [c for c in result.candidates if c.origin.startswith("paraphrase")]
    assert paraphrased and all("brass key" in c.text for c in paraphrased)  # the served model's words
    assert all(c.attribution is not None and 0 < c.comprehension <= 1 for c in result.candidates if not c.drifted)
    assert all(r.messages[-1]["content"].startswith(("Summary", "Instruction")) for r in served.requests)


def test_the_auto_clarify_setting_is_saved_with_the_story(db, embedder):
    from tests.test_service import make_service

    service, _ = make_service(db, embedder)
    story = service.new_story("A keeper finds a letter from the future.")
    assert service.clarify_automatically(story.id) is False
    assert service.set_clarify_automatically(story.id, True)
    assert make_service(db, embedder)[0].clarify_automatically(story.id)  # read back from the database
    assert service.set_clarify_automatically(story.id, False) is False and not service.clarify_automatically(story.id)


@pytest.mark.model
def test_auto_mode_with_the_setting_on_writes_from_the_best_wording(backend, embedder, story_backup, tmp_path):
    """The wordings are ranked by the embedded model's gradients; the text is the script's, as from
    a served model (the embedded model writes steps in test_browser_model.py and test_cli.py). On a
    SQLite file only: the setting itself is tested on both databases above."""
    from app.service import StoryService
    from generation.recurrence import Writer
    from memory.longterm import LongTermMemory
    from storage.db import open_database, sqlite_url

    paraphrase = " After her quarrel with Tomas, Mara carries the brass key up to the lamp room."
    served = ScriptedBackend(lambda request: paraphrase if "Instruction:" in request.messages[-1]["content"] else None)
    db = open_database(sqlite_url(tmp_path / "sca.db"))
    try:
        service = StoryService(db, LongTermMemory(embedder, use_gpu=False), Writer(served), scorer=backend)
        story = service.manuscripts.import_backup(story_backup.read_bytes())  # a story to go on with
        assert service.clarify_automatically(story.id) is False
        assert service.set_clarify_automatically(story.id, True) and service.clarify_automatically(story.id)
        parts = []
        service.auto(story.id, 1, on_text=lambda part, text: parts.append(part))
        assert "clarify" in parts
        trace = service.inspect(story.id)
        [call] = [c for c in trace["calls"] if c["part"] == "clarify"]
        assert trace["plan"] == call["output"] and call["prompt"]  # written from the clarified wording
        assert any(c.startswith("yours: ") for c in call["candidates"]) and len(call["candidates"]) >= 2
        scores = [re.search(r": (None|[0-9.]+(?:e-[0-9]+)?): ", c).group(1) for c in call["candidates"]]
        assert all(0 < float(score) <= 1 for score in scores if score != "None")  # the model's gradients
        assert scores[0] != "None"
        asked = [r.messages[-1]["content"] for r in served.requests if "In this paragraph:" in r.messages[-1]["content"]]
        assert asked[-1].endswith(f"In this paragraph: {call['output']}")  # the best wording is what was asked for
        again = service.manuscripts.import_backup(service.manuscripts.export(story.id, "json").data)
        assert service.inspect(again.id)["calls"] == trace["calls"]  # a backup keeps the clarify call
    finally:
        db.close()
