"""The story service over a real SQLite file, the real embedder and FAISS, with a scripted model."""

import threading

import pytest
from sqlalchemy import func, select

from app.service import Limits, StoryService
from common.errors import GenerationFailed
from generation.recurrence import Writer
from memory.longterm import LongTermMemory
from common.errors import Busy, Conflict, InvalidInput, NotFound
from storage.models import MemoryEntry, Step, Story
from tests.fakes import PARAGRAPH, ScriptedBackend


def make_service(db, embedder, override=None, **limits):
    backend = ScriptedBackend(override)
    service = StoryService(db, LongTermMemory(embedder, use_gpu=False), Writer(backend), Limits(**limits))
    return service, backend


def counts(db):
    with db.Session() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Story, Step, MemoryEntry))


def test_new_story_then_steps_persist_everything(db, embedder):
    service, _ = make_service(db, embedder)
    view = service.new_story("A keeper finds a letter from the future.")
    assert view.title == "The Keeper's Letter" and view.paragraphs == [PARAGRAPH] and len(view.plans) == 3
    view = service.step(view.id, plan=2)
    view = service.step(view.id, instruction="Mara burns the letter.")
    assert len(view.paragraphs) == 3
    with db.Session() as s:
        steps = s.scalars(select(Step).order_by(Step.id)).all()
        assert [st.plan for st in steps] == ["", steps[0].plans[1], "Mara burns the letter."]
        assert [st.parent_id for st in steps] == [None, steps[0].id, steps[1].id]
        assert all(st.prompt_tokens > 0 and st.trace["calls"] for st in steps)
    assert counts(db)[2] >= 3  # each paragraph filed into long-term memory
    assert service.manuscript(view.id).startswith("# The Keeper's Letter\n\n" + PARAGRAPH)


def test_step_retrieves_earlier_memories_into_the_prompt(db, embedder):
    service, backend = make_service(db, embedder)
    story = service.new_story("premise")
    for _ in range(3):  # the last paragraphs are in the prompt as recent text; earlier ones are retrieved
        service.step(story.id, instruction="Mara climbs the stairs.")
    backend.requests.clear()
    service.step(story.id, instruction="Mara reads the letter under the lantern in the lamp room.")
    prompt = backend.requests[0].messages[-1]["content"]
    assert "Passages from earlier in the story" in prompt
    view = service.view(story.id)
    recent = prompt[prompt.index("The last paragraph:"):]
    assert view.paragraphs[-2] in recent and view.paragraphs[-3] in recent  # a short last paragraph brings its parent
    with db.Session() as s:
        head = s.get(Step, view.head_step_id)
        assert head.trace["retrieved"] and all("score" in r for r in head.trace["retrieved"])
        shown = {view.step_ids[-2], view.step_ids[-3]}
        retrieved_steps = {s.get(MemoryEntry, r["id"]).step_id for r in head.trace["retrieved"]}
        assert not retrieved_steps & shown  # what is already in the prompt is not retrieved again


@pytest.mark.parametrize("premise, message", [("", "premise is empty"), ("   \n", "premise is empty"),
                                              ("x" * 100_000, "100,000 characters")])
def test_bad_premise_is_refused_before_any_generation(db, embedder, premise, message):
    service, backend = make_service(db, embedder)
    with pytest.raises(InvalidInput, match=message):
        service.new_story(premise)
    assert backend.requests == [] and counts(db) == (0, 0, 0)


def test_unknown_story_and_missing_plan_are_refused_and_write_nothing(db, embedder):
    service, backend = make_service(db, embedder)
    story = service.new_story("premise")
    before, asked = counts(db), len(backend.requests)
    with pytest.raises(NotFound, match="no story with id 999"):
        service.step(999, plan=1)
    with pytest.raises(InvalidInput, match="no plan 4; choose 1 to 3"):
        service.step(story.id, plan=4)
    with pytest.raises(InvalidInput, match="instruction is empty"):
        service.step(story.id, instruction="  ")
    with pytest.raises(InvalidInput, match="either a plan number or an instruction"):
        service.step(story.id)
    assert counts(db) == before and len(backend.requests) == asked


def test_a_failed_step_writes_nothing(db, embedder):
    fail = {"on": False}
    service, _ = make_service(db, embedder, lambda r: "Bad." if fail["on"] and "paragraph of" in
                              r.messages[-1]["content"] else None)
    story = service.new_story("premise")
    before = counts(db)
    fail["on"] = True
    with pytest.raises(GenerationFailed):
        service.step(story.id, plan=1)
    assert counts(db) == before
    assert service.view(story.id).paragraphs == [PARAGRAPH]


def test_concurrent_steps_on_one_story_are_serialized(db, embedder):
    service, _ = make_service(db, embedder)
    story = service.new_story("premise")
    errors = []

    def write():
        try:
            service.step(story.id, plan=1)
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    view = service.view(story.id)
    assert len(view.paragraphs) == 5  # a chain, no lost or forked step
    with db.Session() as s:
        depths = sorted(s.scalars(select(Step.depth)).all())
    assert depths == [0, 1, 2, 3, 4]


def test_regenerate_keeps_the_old_version_and_versions_can_be_switched(db, embedder):
    service, _ = make_service(db, embedder)
    story = service.new_story("premise")
    first = service.step(story.id, plan=1)
    again = service.regenerate(story.id)
    assert again.version == (2, 2) and len(again.paragraphs) == 2
    assert again.paragraphs[-1] != first.paragraphs[-1]
    assert again.paragraphs[0] == first.paragraphs[0]
    back = service.other_version(story.id, -1)
    assert back.paragraphs == first.paragraphs and back.version == (1, 2)
    with pytest.raises(InvalidInput, match="no earlier version"):
        service.other_version(story.id, -1)
    with db.Session() as s:
        step = s.get(Step, again.head_step_id)
        assert step.plan == s.get(Step, first.head_step_id).plan  # the same plan, written again


def test_regenerating_the_opening_keeps_title_and_outline(db, embedder):
    service, backend = make_service(db, embedder)
    story = service.new_story("premise")
    backend.requests.clear()
    again = service.regenerate(story.id)
    assert again.version == (2, 2) and again.title == story.title and again.outline == story.outline
    assert not any("short title" in r.messages[-1]["content"] or "Write an outline" in r.messages[-1]["content"]
                   for r in backend.requests)


def test_undo_moves_the_head_back_and_the_branch_can_be_resumed(db, embedder):
    service, _ = make_service(db, embedder)
    story = service.new_story("premise")
    two = service.step(story.id, plan=1)
    with pytest.raises(InvalidInput, match="nothing to undo"):
        service.undo(service.undo(story.id).id)
    view = service.view(story.id)
    assert view.paragraphs == two.paragraphs[:1]
    resumed = service.switch(story.id, view.head_step_id)  # the newest paragraph below the opening
    assert resumed.paragraphs == two.paragraphs
    with pytest.raises(NotFound):
        service.switch(story.id, 10_000)


def test_an_edited_paragraph_is_what_the_model_sees_next(db, embedder):
    service, backend = make_service(db, embedder)
    story = service.new_story("premise")
    view = service.step(story.id, plan=1)
    edited = ("Mara painted the lighthouse door a furious shade of violet, then sat on the step and ate "
              "an entire jar of pickled herring while the gulls watched her with open envy.")
    backend.requests.clear()
    view = service.edit_paragraph(story.id, view.step_ids[-1], edited)
    assert view.paragraphs[-1] == edited and not view.notice
    # the step's summary is derived again, from the memory before it and the edited text
    assert len(backend.requests) == 1 and "New paragraph: " + edited in backend.requests[0].messages[-1]["content"]
    backend.requests.clear()
    service.step(story.id, instruction="The gulls steal the herring jar.")
    prompt = backend.requests[0].messages[-1]["content"]
    assert prompt.count(edited) == 1  # the edited text is the recent text the model continues from
    with db.Session() as s:
        derived = s.scalars(select(MemoryEntry).where(MemoryEntry.step_id == view.step_ids[-1])).all()
        assert {e.stale for e in derived} == {True, False}
        assert {e.kind for e in derived if not e.stale} == {"paragraph", "summary"}
        assert all(e.text in edited for e in derived if not e.stale and e.kind == "paragraph")
        step = s.get(Step, view.step_ids[-1])
        assert [e.text for e in derived if not e.stale and e.kind == "summary"] == [step.short_memory]
    hits = service.search_memory(story.id, "violet door and pickled herring", k=1)
    assert hits[0].text.startswith("Mara painted the lighthouse door")


def test_an_edit_is_saved_even_when_the_model_cannot_rewrite_the_summary(db, embedder):
    def copy_paragraph(request):  # a summary that only copies the paragraph is refused, every time
        asked = request.messages[-1]["content"]
        return asked.split("New paragraph: ")[1].split("\n\n")[0] if "Rewrite the summary" in asked else None

    service, backend = make_service(db, embedder)
    story = service.new_story("premise")
    view = service.step(story.id, plan=1)
    backend.override = copy_paragraph
    edited = "Mara sold the lighthouse to a man who collected clocks, and bought a boat with the money."
    view = service.edit_paragraph(story.id, view.step_ids[-1], edited)
    assert view.paragraphs[-1] == edited and "could not rewrite its summary" in view.notice
    with db.Session() as s:
        step = s.get(Step, view.step_ids[-1])
        entries = s.scalars(select(MemoryEntry).where(MemoryEntry.step_id == step.id)).all()
        # the old summary stays in use (and editable in the Memory tab); the paragraph chunks are new
        assert [e.text for e in entries if e.kind == "summary" and not e.stale] == [step.short_memory]
        assert all(e.text in edited for e in entries if e.kind == "paragraph" and not e.stale)


def test_an_edit_keeps_pins_and_says_when_hand_edited_entries_were_replaced(db, embedder):
    service, _ = make_service(db, embedder)
    memories = service.memories
    story = service.new_story("premise")
    view = service.step(story.id, plan=1)
    rows = [r for r in memories.entries(story.id) if r.where == "paragraph 2"]
    chunk = next(r for r in rows if r.kind == "paragraph")
    summary = next(r for r in rows if r.kind == "summary")
    memories.update(story.id, chunk.id, pinned=True)
    memories.update(story.id, summary.id, "Mara knows the letter is a forgery.")
    view = service.edit_paragraph(story.id, view.step_ids[1], "Mara rowed to the reef and found only gulls.")
    assert f"({summary.id})" in view.notice and "replaced" in view.notice
    fresh = [r for r in memories.entries(story.id, include_stale=False) if r.where == "paragraph 2"]
    assert {r.kind for r in fresh if r.pinned} == {"paragraph"}
    assert memories.entry(story.id, chunk.id).stale and memories.entry(story.id, summary.id).stale
    before = memories.count(story.id)
    unchanged = service.edit_paragraph(story.id, view.step_ids[1], view.paragraphs[1], chapter="Two")
    assert not unchanged.notice and unchanged.chapters[1] == "Two"
    assert memories.count(story.id) == before  # a chapter title alone derives no memory


def test_an_empty_edit_is_refused_and_loses_nothing(db, embedder):
    service, _ = make_service(db, embedder)
    story = service.new_story("premise")
    with pytest.raises(InvalidInput, match="paragraph is empty"):
        service.edit_paragraph(story.id, story.step_ids[0], "   ")
    with pytest.raises(NotFound):
        service.edit_paragraph(story.id, 9999, "text")
    assert service.view(story.id).paragraphs == story.paragraphs


def test_chapters_title_the_manuscript(db, embedder):
    service, _ = make_service(db, embedder)
    story = service.new_story("premise")
    view = service.step(story.id, plan=1)
    service.set_chapter(story.id, view.step_ids[0], "The Letter")
    service.set_chapter(story.id, view.step_ids[1], "The Reef")
    text = service.manuscript(story.id)
    assert text.index("## The Letter") < text.index(view.paragraphs[0]) < text.index("## The Reef") \
        < text.index(view.paragraphs[1])
    service.set_chapter(story.id, view.step_ids[1], "")
    assert "## The Reef" not in service.manuscript(story.id)


def test_auto_mode_picks_and_revises_a_plan_each_step(db, embedder):
    service, _ = make_service(db, embedder)
    story = service.new_story("premise")
    seen = []
    view = service.auto(story.id, 2, on_step=lambda n, total, v: seen.append((n, total, len(v.paragraphs))))
    assert seen == [(1, 2, 2), (2, 2, 3)]
    with db.Session() as s:
        head = s.get(Step, view.head_step_id)
        assert head.plan.startswith("Mara waits for the storm")  # the revised plan was followed
        assert [c["part"] for c in head.trace["calls"]][:2] == ["choice", "revised_plan"]


def test_stopping_auto_mode_mid_step_writes_nothing_of_that_step(db, embedder):
    service, _ = make_service(db, embedder)
    story = service.new_story("premise")
    cancel = threading.Event()

    def stop_during_second_paragraph(part, text):
        if part == "paragraph" and len(service.view(story.id).paragraphs) == 2:
            cancel.set()

    view = service.auto(story.id, 5, on_text=stop_during_second_paragraph, cancel=cancel)
    assert len(view.paragraphs) == 2
    assert counts(db)[1] == 2
    with pytest.raises(InvalidInput, match="1 to 500 steps"):
        service.auto(story.id, 0)


def test_the_inspector_shows_prompts_parts_and_scores(db, embedder):
    service, backend = make_service(db, embedder)
    story = service.new_story("premise")
    for _ in range(3):
        service.step(story.id, plan=1)
    view = service.step(story.id, instruction="Mara reads the letter again by the lamp.")
    seen = service.inspect(story.id)
    assert seen["step_id"] == view.head_step_id and seen["plan"] == "Mara reads the letter again by the lamp."
    paragraph_call = next(c for c in seen["calls"] if c["part"] == "paragraph")
    assert "Mara reads the letter again by the lamp." in paragraph_call["prompt"]
    assert paragraph_call["output"].strip()
    parts = seen["parts"]
    assert set(parts) == {"premise", "short_memory", "memories", "lore", "last_paragraph", "instruction"}
    assert all(p["tokens"] <= p["budget"] for p in parts.values())
    assert len(parts["memories"]["each"]) == len(seen["retrieved"]) > 0
    assert all(0 < r["score"] <= 1.0001 for r in seen["retrieved"])
    assert service.inspect(story.id, view.step_ids[0])["plan"] == ""


def test_reader_mode_plays_its_own_branch_and_leaves_the_manuscript_alone(db, embedder):
    service, backend = make_service(db, embedder)
    story = service.new_story("premise")
    manuscript = service.manuscript(story.id)
    reading = service.reading
    play = reading.start(story.id, "Ada")
    assert play.scenes == story.paragraphs and play.choices[0] == "Climb to the lamp room and light the lamp."
    play = reading.choose(play.playthrough_id, 2)
    play = reading.choose(play.playthrough_id, 1)
    assert len(play.scenes) == 3 and len(play.choices) == 3
    other = reading.start(story.id, "Ben")  # a second reader starts from the same scene
    assert other.scenes == story.paragraphs
    assert service.manuscript(story.id) == manuscript
    assert service.view(story.id).version == (1, 1)  # scenes are not versions of the writer's paragraphs
    assert reading.playthroughs(story.id) == [(play.playthrough_id, "Ada", 3), (other.playthrough_id, "Ben", 1)]
    with db.Session() as s:
        scene = s.get(Step, s.scalar(select(func.max(Step.id))))
        assert scene.plan == "The main character decides to climb to the lamp room and light the lamp."
    with pytest.raises(InvalidInput, match="no choice 5"):
        reading.choose(play.playthrough_id, 5)
    with pytest.raises(NotFound):
        reading.choose(999, 1)


def test_a_stale_page_gets_a_conflict_instead_of_writing_after_the_wrong_paragraph(db, embedder):
    service, _ = make_service(db, embedder)
    story = service.new_story("premise")
    seen = story.head_step_id
    service.step(story.id, plan=1, seen_head=seen)  # tab A
    before = counts(db)
    with pytest.raises(Conflict, match="another tab"):
        service.step(story.id, plan=2, seen_head=seen)  # tab B still shows the opening
    with pytest.raises(Conflict):
        service.undo(story.id, seen_head=seen)
    assert counts(db) == before


def test_a_ten_thousand_character_plan_is_refused(db, embedder):
    service, backend = make_service(db, embedder)
    story = service.new_story("premise")
    asked = len(backend.requests)
    with pytest.raises(InvalidInput, match="10,000 characters; the limit is 2,000"):
        service.step(story.id, instruction="x" * 10_000)
    assert len(backend.requests) == asked


def test_decoding_settings_are_saved_per_story_and_reach_every_free_text_call(db, embedder):
    from generation.backend import Decoding

    service, backend = make_service(db, embedder)
    first = service.new_story("A keeper finds a letter from the future.")
    other = service.new_story("Two bakers share one oven.")
    assert all(r.decoding == Decoding() for r in backend.requests)  # the defaults before any change
    chosen = Decoding(guard=False, repetition_penalty=1.3, no_repeat_ngram_size=4, dry_multiplier=0.8)
    service.set_decoding(first.id, chosen)
    assert service.decoding(first.id) == chosen and service.decoding(other.id) == Decoding()
    backend.requests.clear()
    service.step(first.id, plan=1)
    assert backend.requests and all(r.decoding == chosen for r in backend.requests)
    backend.requests.clear()
    service.step(other.id, plan=1)
    assert all(r.decoding == Decoding() for r in backend.requests)
    with pytest.raises(InvalidInput, match="lambda"):
        service.set_decoding(first.id, Decoding(guard_lambda=0))
    assert service.decoding(first.id) == chosen  # the refused settings changed nothing
    with pytest.raises(NotFound):
        service.set_decoding(999, chosen)


def test_repetition_chart_counts_repeated_sentences_per_paragraph(db, embedder):
    looping = "The tide came in again over the rocks. " * 3 + "Mara watched it rise and fall below the tower."

    def override(request):
        asked = request.messages[-1]["content"]
        filler = " ".join(f"w{i}" for i in range(60)) + "."
        return filler + " " + looping if "paragraph of the story" in asked else None

    service, _ = make_service(db, embedder, override)
    view = service.new_story("A keeper finds a letter from the future.")
    service.step(view.id, plan=1)
    rows = service.repetition(view.id)
    assert [r["paragraph"] for r in rows] == [1, 2]
    assert rows[0]["repeated_sentences"] == 0 and rows[1]["repeated_sentences"] == 2
    assert rows[1]["rep_4"] > 0.1 > rows[0]["rep_4"]


def test_the_page_follows_the_plan_unless_the_box_holds_other_text(db, embedder):
    service, _ = make_service(db, embedder)
    story = service.new_story("premise")
    view = service.writing.write_next(story.id, 1, f"  {story.plans[0]} ")  # the plan, as the box shows it
    assert service.inspect(view.id)["plan"] == story.plans[0]
    view = service.writing.write_next(view.id, 1, "Mara burns the letter.")  # the plan, edited
    assert service.inspect(view.id)["plan"] == "Mara burns the letter."
    with pytest.raises(InvalidInput, match="Pick one of the plans or write your own instruction"):
        service.writing.write_next(view.id, None, "  ")
    with pytest.raises(InvalidInput, match="There is no paragraph 4; the story has 3"):
        view.index_of(4)
    assert view.index_of(3) == 2


def test_one_auto_run_a_story_and_only_its_starter_stops_it(db, embedder):
    service, _ = make_service(db, embedder)
    ada, bob = service.as_user("ada"), service.as_user("bob")
    with ada.auto_mode.running(1) as cancel:
        with pytest.raises(Busy, match="Auto mode is already running on this story"):
            with ada.auto_mode.running(1):
                raise AssertionError("a second run started")
        with bob.auto_mode.running(1) as other:  # another person's run of their own story 1
            with pytest.raises(InvalidInput, match="Nothing is running on this story"):
                bob.auto_mode.stop(2)
        assert other.is_set()  # set when its run ended
        ada.auto_mode.stop(1)
        assert cancel.is_set()
    with pytest.raises(InvalidInput, match="Nothing is running on this story"):
        ada.auto_mode.stop(1)


@pytest.mark.parametrize("text, message", [
    ("A keeper\x1b[31m finds a letter.", r"a control character \(U\+001B\) at character 9"),
    ("A keeper finds a \ud800letter.", r"a lone surrogate \(U\+D800\) at character 18"),
    ("A keeper\x00 finds a letter.", r"a control character \(U\+0000\) at character 9"),
])
def test_control_characters_and_lone_surrogates_are_refused_and_nothing_is_written(db, embedder, text, message):
    service, backend = make_service(db, embedder)
    with pytest.raises(InvalidInput, match=f"the premise has {message}; remove it"):
        service.new_story(text)
    story = service.new_story("A keeper finds a letter.\r\nIt is dated\tfifty years ahead.")  # line ends and tabs are text
    with pytest.raises(InvalidInput, match=f"the instruction has {message}"):
        service.step(story.id, instruction=text)
    assert counts(db)[:2] == (1, 1) and not backend.requests[-1].messages[-1]["content"].count("\x1b")
