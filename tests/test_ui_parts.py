"""The UI's plumbing without a browser: streaming from a worker thread, problems, the inspector."""

import time

import pytest

from app.ui.inspect import inspector_markdown
from app.service.readiness import Pace
from app.ui.page import Problem, Progress, stream
from common.errors import Conflict, InvalidInput, NotFound


def test_stream_yields_the_newest_text_at_most_every_tenth_of_a_second_then_the_result():
    def action(x, on_text):
        for n in range(1, 201):  # far faster than a page can show
            on_text("paragraph", " ".join(["word"] * n))
        time.sleep(0.3)
        on_text("short_memory", "A summary.")
        return x * 2

    started = time.monotonic()
    events = list(stream(action, 21))
    *texts, result = events
    assert result == 42 and time.monotonic() - started < 5
    assert ("text", "paragraph", " ".join(["word"] * 200)) in [t[:3] for t in texts]  # the newest is always shown
    assert texts[-1][:3] == ("text", "short_memory", "A summary.")
    assert texts[-1][3] == "writing: the paragraph, the short-term memory · 0 s so far"  # 0.3 s apart: not done
    assert len(texts) <= 5, texts  # not 201


def test_progress_says_which_parts_are_done_which_are_being_written_and_the_time_left():
    progress = Progress(expected=30.0)
    progress.restart(at=0.0)
    progress.wrote("paragraph", at=0.5)
    assert progress.line(now=1.0) == "writing: the paragraph · about 29 s left"
    progress.wrote("paragraph", at=9.0)
    for n, part in enumerate(("short_memory", "plan_1", "plan_2", "plan_3") * 5):  # written together
        progress.wrote(part, at=9.5 + n * 0.1)
    assert progress.line(now=12.0) == ("done: the paragraph · writing: the short-term memory, plan 1, plan 2, "
                                       "plan 3 · about 18 s left")
    for n in range(30):  # the memory has ended; the plans go on
        progress.wrote(("plan_1", "plan_2", "plan_3")[n % 3], at=11.5 + n * 0.1)
    assert progress.line(now=40.0) == ("done: the paragraph, the short-term memory · writing: plan 1, plan 2, plan 3 "
                                       "· 40 s so far, longer than the recent 30 s")
    progress.wrote("short_memory", at=41.0)  # tried again, after the plans ended
    assert "done: the paragraph, plan 1, plan 2, plan 3 · writing: the short-term memory ·" in progress.line(now=41.0)
    progress.restart(at=50.0)  # the next step of a run
    progress.wrote("paragraph", at=50.0)
    assert progress.line(now=51.0) == "writing: the paragraph · about 29 s left"


def test_the_time_left_comes_from_the_machine_s_recent_steps_of_that_kind():
    pace = Pace(keep=3)
    assert pace.expected("step") is None
    for seconds in (40.0, 10.0, 20.0, 30.0):  # the first falls out
        pace.add("step", seconds)
    pace.add("start", 90.0)
    assert pace.expected("step") == 20.0 and pace.expected("start") == 90.0


def test_stream_turns_errors_into_one_line_problems():
    def refused(on_text):
        raise InvalidInput("the premise is empty")

    def conflict(on_text):
        raise Conflict("the story changed in another tab")

    def broken(on_text):
        raise KeyError("boom")

    [problem] = list(stream(refused))
    assert isinstance(problem, Problem) and problem == "the premise is empty" and not problem.stale_page
    assert list(stream(conflict))[0].stale_page
    [unexpected] = list(stream(broken))
    assert isinstance(unexpected, Problem) and "unexpected error (KeyError" in unexpected


def test_stream_reports_steps_of_a_run():
    def run(on_text, on_step):
        on_step(1, 2, "view-1")
        on_step(2, 2, "view-2")
        return "done"

    assert list(stream(run, steps=True)) == [("step", 1, 2, "view-1"), ("step", 2, 2, "view-2"), "done"]


def test_inspector_shows_parts_scores_and_raw_calls():
    trace = {"step_id": 7, "model": "m", "seconds": 1.5, "prompt_tokens": 10, "completion_tokens": 5,
             "retries": 1, "plan": "Go north.",
             "parts": {"short_memory": {"tokens": 40, "budget": 360}, "memories": {"tokens": 30, "budget": 400}},
             "retrieved": [{"id": 3, "score": 0.1818, "cosine": 0.8123, "words": 4.25,
                            "text": "The north road is flooded."}],
             "lore": [{"id": 4, "reason": "key: Tomas", "text": "Tomas is the baker."}],
             "decoding": {"ditto": True, "adapter": "DITTO adapter a in use", "guard": False, "guard_lambda": 0.5,
                          "repetition_penalty": None, "no_repeat_ngram_size": 3, "dry_multiplier": 0.8},
             "calls": [{"part": "paragraph", "attempt": 1, "prompt": "PROMPT", "output": "bad", "problem": "too short"},
                       {"part": "paragraph", "attempt": 2, "prompt": "PROMPT", "output": "RAW OUT"}]}
    text = inspector_markdown(trace)
    assert "| short-term memory | 40 | 360 |" in text and "**70**" in text
    assert "`0.182` · `0.812` · `4.2` The north road is flooded." in text
    assert "*key: Tomas* Tomas is the baker." in text
    assert "refused: too short" in text and "RAW OUT" in text and text.count("PROMPT") == 2
    assert ("**Decoding:** DITTO adapter on (DITTO adapter a in use) · sentence guard off · repetition penalty as "
            "each call sets it · no-repeat 3-grams · DRY ×0.8") in text


def test_the_page_is_sent_only_the_paragraphs_that_changed():
    from app.service import StoryView
    from app.ui.manuscript import Held, Pane, text_of, update

    def view(story, paragraphs, ids, chapters=None):
        return StoryView(story, "The Lamp", "", "", paragraphs, "", [], ids[-1], {}, step_ids=tuple(ids),
                         chapters=tuple(chapters or [None] * len(paragraphs)))

    opened, seen = update(Pane(view(1, ["One.", "Two."], [1, 2], ["Chapter 1", None])), None)
    assert opened["base"] is None and opened["count"] == 2  # a page that holds nothing gets all
    assert opened["at"] == [[0, "Chapter 1", "One."], [1, None, "Two."]]
    stepped, seen2 = update(Pane(view(1, ["One.", "Two.", "Three."], [1, 2, 3], ["Chapter 1", None, None])), seen)
    assert stepped["at"] == [[2, None, "Three."]] and stepped["base"] == opened["token"] != stepped["token"]
    redone, seen3 = update(Pane(view(1, ["One.", "Two.", "Three again."], [1, 2, 4], ["Chapter 1", None, None])),
                           seen2)
    assert redone["at"] == [[2, None, "Three again."]]  # another version of the last paragraph
    undone, seen4 = update(Pane(view(1, ["One.", "Two."], [1, 2], ["Chapter 1", None])), seen3)
    assert undone["at"] == [] and undone["count"] == 2 and undone["token"] == opened["token"]
    edited, _ = update(Pane(view(1, ["One, edited.", "Two."], [1, 2], ["Chapter 1", None])), seen4)
    assert edited["at"] == [[0, "Chapter 1", "One, edited."]]
    retitled, _ = update(Pane(view(1, ["One.", "Two."], [1, 2], ["Chapter 1", "Chapter 2"])), seen4)
    assert retitled["at"] == [[1, "Chapter 2", "Two."]]
    other, _ = update(Pane(view(2, ["One."], [9])), seen4)
    assert other["base"] is None and other["story"] == 2  # another story: all of it
    again, _ = update(Pane(view(1, ["One.", "Two."], [1, 2], ["Chapter 1", None]), whole=True), seen4)
    assert again["base"] is None and len(again["at"]) == 2  # asked for all: all
    assert text_of(stepped) == "The Lamp\n\nThree."
    page = Held()  # an API client's copy, kept as the browser keeps its own
    for sent in (opened, stepped, redone, undone, edited):
        assert page.apply(sent)
    assert page.paragraphs == ["One, edited.", "Two."] and page.token == edited["token"]
    assert not page.apply(stepped)  # made from a version it no longer holds: it must ask for all
    assert page.apply(again) and page.paragraphs == ["One.", "Two."]


def test_the_clarify_table_escapes_words_and_shades_them_by_share():
    from app.ui.clarify import table
    from generation.sca import Attribution, Candidate, Clarification

    measures = {"readability": 80.0, "formality": 50.0, "concreteness": None, "concreteness_coverage": 0.0}
    kept = Candidate("Mara <b>climbs</b>", "yours", 1.0, measures,
                     Attribution([("Mara", 0.75), ("<b>climbs</b>", 0.25)], 0.81, 1.0, 0.02, "She"))
    drifted = Candidate("A <script>x</script> story", "paraphrase 1", 0.2, measures)
    html_out = table(Clarification("Mara <b>climbs</b>", [kept, drifted], ig_steps=8, seconds=12.3))
    assert "<script>" not in html_out and "&lt;script&gt;" in html_out and "&lt;b&gt;climbs" in html_out
    assert "rgba(255, 140, 0, 0.75)" in html_out and "rgba(255, 140, 0, 0.25)" in html_out  # twice an even share: 1
    assert 'title="75.0% of the attribution"' in html_out
    assert "meaning drifted" in html_out and "0.810" in html_out and "8 steps" in html_out


def test_one_decorator_reports_no_story_and_the_apps_errors():
    from app.ui.page import action

    @action
    def refused(service, sid):
        raise InvalidInput("the premise is empty")

    @action(story=False, also={"download": "hidden"})
    def streamed(service, sid):
        yield {"writing": "half"}
        raise NotFound("no story with id 9")

    assert refused(None, None) == {"writing": "", "status": "**Nothing was written:** Start or open a story first."}
    assert refused(None, 3)["status"] == "**Nothing was written:** the premise is empty"
    assert list(streamed(None, None)) == [{"writing": "half"}, {"writing": "", "download": "hidden",
                                                                "status": "**Nothing was written:** no story with id 9"}]


def test_handlers_say_what_they_update_by_name():
    import gradio as gr

    from app.people import People
    from app.ui.page import Page

    with gr.Blocks():
        page = Page(People(None, accounts_on=False), writers=2)
        page.add(status=gr.Markdown(), writing=gr.Markdown())
    event = page.keyed(lambda service, note: {"status": note})
    assert event(None, "saved") == {page["status"]: "saved"}
    assert page.of("writing", "status") == [page["writing"], page["status"]]
    assert page.model == {"concurrency_id": "model", "concurrency_limit": 2}


def test_the_inspector_shows_plans_memories_and_lore_as_text_never_as_markup():
    from markdown_it import MarkdownIt

    bait = "Go ![pixel](http://evil.example/p.png) [here](http://evil.example) <img src=x onerror=alert(1)> *now*"
    call = {"part": bait, "attempt": 1, "prompt": "p", "output": "o", "problem": bait}  # a part or a problem, too
    trace = {"step_id": 7, "model": "m", "plan": bait, "calls": [call],
             "retrieved": [{"id": 3, "score": 0.1, "text": bait}], "lore": [{"id": 4, "reason": bait, "text": bait}]}
    rendered = MarkdownIt("commonmark").render(inspector_markdown(trace))
    assert "<img" not in rendered and "<a " not in rendered and "<em>now" not in rendered, rendered
    assert rendered.count("![pixel](http") == 6 and rendered.count("&lt;img src=x") == 6  # shown as written


def test_a_problem_quoting_the_story_shows_it_as_written():
    """A refusal quotes what a paragraph or memory now reads: on the status line (Markdown) and in
    the warning (HTML), that text is shown, never fetched, followed or rendered."""
    from markdown_it import MarkdownIt

    from app.ui.page import problem

    bait = "Go ![pixel](http://evil.example/p.png) [here](http://evil.example) <img src=x onerror=alert(1)> *now*"
    with pytest.warns(UserWarning) as warned:
        shown = problem(f"paragraph 2 changed since this page showed it; nothing was written. It now reads: «{bait}».")
    rendered = MarkdownIt("commonmark").render(shown["status"])
    assert "<img" not in rendered and "<a " not in rendered and "<em>now" not in rendered, rendered
    assert "![pixel](http" in rendered and "&lt;img src=x" in rendered and "It now reads: «Go" in rendered
    assert "<img" not in str(warned[0].message) and "&lt;img src=x" in str(warned[0].message)
