"""The page's flows in a real browser: Debian's Chromium driven by Playwright, against the real
web app served in this process with the scripted model (tests/web.py), the real embedder and a
SQLite file. The tests run in order on one page, as one person's session would; a screenshot of
each screen goes to test-artifacts/. test_browser_model.py does the same with the embedded model
for what only the model shows: a story started, stepped and exported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.web import (PacedBackend, TinyScorer, chromium, inspect_step, paragraphs, pick_plan, scripted_app, shot,
                       start_story, status_says, tab, wait_paragraphs)

pytestmark = pytest.mark.browser

WAIT = 60_000  # ms: the scripted model takes a second or two a step


@pytest.fixture(scope="module")
def model():
    return PacedBackend()


@pytest.fixture(scope="module")
def served(tmp_path_factory, embedder, model):
    """The app's URL and its service (through which a test can act as another tab would)."""
    with scripted_app(tmp_path_factory.mktemp("browser"), embedder, model, TinyScorer()) as served:
        yield served


@pytest.fixture(scope="module")
def server(served):
    return served[0]


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(server)
        yield page


def test_01_stepping_before_a_story_exists_is_refused(page):
    page.locator("#step").click()
    status_says(page, "Start or open a story first.", 15_000)
    page.locator("#undo").click()
    status_says(page, "Start or open a story first.", 15_000)
    shot(page, "01-no-story")


def test_02_start_a_story_and_watch_it_stream(page):
    start_story(page, WAIT, ("02-streaming", "03-opening"))


def test_03_pick_a_plan_and_step(page):
    pick_plan(page, 1)
    page.locator("#step").click()
    wait_paragraphs(page, 2, WAIT)
    status_says(page, "Paragraph 2 written", WAIT)
    shot(page, "04-after-plan")


def test_04_edit_a_plan_then_step_with_ctrl_enter(page):
    page.locator("#plans label").nth(0).click()
    page.wait_for_function("document.querySelector('#instruction textarea').value.length > 10")
    box = page.locator("#instruction textarea")
    box.fill("A storm breaks the lighthouse lamp and Mara climbs up to mend it.")
    box.press("Control+Enter")  # writes, as the Write button does
    wait_paragraphs(page, 3, WAIT)
    shot(page, "05-after-edited-plan")


def test_05_regenerate_keeps_both_versions(page):
    before = page.locator("#manuscript p").nth(2).inner_text()
    page.locator("#regenerate").click()
    page.locator("#version").get_by_text("version 2 of 2").wait_for(timeout=WAIT)
    assert page.locator("#manuscript p").nth(2).inner_text() != before
    shot(page, "06-regenerated")
    page.locator("#older").click()
    page.locator("#version").get_by_text("version 1 of 2").wait_for(timeout=30_000)
    assert page.locator("#manuscript p").nth(2).inner_text() == before


def test_06_undo(page):
    page.locator("#undo").click()
    wait_paragraphs(page, 2, WAIT)
    shot(page, "07-undone")


def test_07_edit_a_paragraph_and_title_a_chapter(page):
    tab(page, "Edit")
    page.locator("#edit-number input").fill("2")
    page.locator("#edit-number input").press("Enter")
    page.wait_for_function("document.querySelector('#edit-text textarea').value.length > 50", timeout=30_000)
    page.locator("#edit-text textarea").fill("")
    page.locator("#save").click()
    status_says(page, "paragraph is empty", 30_000)  # an empty paragraph is refused, nothing lost
    assert paragraphs(page) == 2
    edited = ("Mara painted the lighthouse door violet, ate a jar of *pickled* herring on the step, "
              "and read the <unk> letter again.")  # shown as written: not Markdown, not HTML
    page.locator("#edit-text textarea").fill(edited)
    page.locator("#chapter textarea").fill("Chapter Two: The Door")
    page.locator("#save").click()  # the model writes the paragraph's summary again: streamed, then saved
    status_says(page, "Paragraph 2 saved", WAIT)
    assert page.locator("#manuscript h3").get_by_text("Chapter Two: The Door").is_visible()
    assert page.locator("#manuscript p").nth(1).inner_text() == edited
    shot(page, "08-edited")


def test_08_auto_mode_runs_two_steps_then_stops(page, model):
    tab(page, "Auto")
    page.locator("#auto-stop").click()
    status_says(page, "Nothing is running", 15_000)
    page.locator("#auto-steps input").fill("4")
    model.hold("outline", after=2)  # the third step waits at its start for the stop
    try:
        page.locator("#auto-start").click()
        page.locator("#auto-progress").get_by_text("Step 2 of 4 written").wait_for(timeout=WAIT)
        page.locator("#auto-stop").click()
        status_says(page, "Stopping", 15_000)
    finally:
        model.release()
    status_says(page, "Auto mode stopped.", WAIT)
    assert paragraphs(page) == 4  # two steps kept, the one in progress dropped
    shot(page, "09-auto-stopped")


def test_09_inspect_the_last_step(page):
    tab(page, "Inspect")
    page.locator("#inspect").click()
    page.locator("#inspected").get_by_text("Raw output:").first.wait_for(timeout=30_000)
    text = page.locator("#inspected").inner_text()
    assert "short-term memory" in text and "recent text" in text and "choice" in text
    shot(page, "10-inspector")


def test_10_reader_plays_two_choices_without_touching_the_manuscript(page):
    manuscript = page.locator("#manuscript").inner_text()
    tab(page, "Read")
    page.locator("#read-start").click()
    page.locator("#choices input[type=radio]").nth(2).wait_for(timeout=WAIT)
    for scene in (2, 3):
        page.locator("#choices label").nth(0).click()
        page.locator("#choose").click()
        status_says(page, f"Scene {scene}.", WAIT)
    assert page.locator("#manuscript").inner_text() == manuscript
    shot(page, "11-reader")


def test_11_memory_desk_edits_reach_the_next_prompt(page):
    tab(page, "Memory")
    status_says(page, "memory entries", 30_000)
    # newest first: the reader's scenes of the test before, with their chunks and summaries
    page.locator("#memory-table").get_by_text("reader scene").filter(visible=True).first.wait_for(timeout=30_000)
    assert page.locator("#memory-table").get_by_text("summary").filter(visible=True).first.is_visible()
    page.locator("#entry-text textarea").fill("Ilse is Mara's twin sister; she runs the ferry and signs with an I.")
    page.locator("#entry-keys textarea").fill("the")
    page.locator("#entry-add-lore").click()
    status_says(page, "would match almost every paragraph", 30_000)  # refused, nothing added
    page.locator("#entry-keys textarea").fill("Ilse, ferry")
    page.locator("#entry-add-lore").click()
    status_says(page, "added.", 30_000)
    page.locator("#memory-table").get_by_text("Ilse is Mara's twin sister").filter(visible=True).first.wait_for(timeout=30_000)
    page.locator("#memory-query textarea").fill("Ilse brings the ferry")
    page.locator("#memory-search").click()
    page.locator("#memory-found").get_by_text("key: Ilse").filter(visible=True).first.wait_for(timeout=30_000)
    shot(page, "12-memory")
    remembered = "Mara has a twin sister named Ilse, who runs the ferry to the mainland."
    page.locator("#short-memory textarea").fill(remembered)
    page.locator("#save-memory").click()
    status_says(page, "Short-term memory saved", 30_000)
    tab(page, "Write")
    instruction = "Ilse arrives on the ferry with a second letter."
    page.locator("#instruction textarea").fill(instruction)
    page.locator("#step").click()
    wait_paragraphs(page, 5, WAIT)
    text = inspect_step(page, instruction)
    assert f"Summary of the story so far: {remembered}" in text  # the edited memory is what the model saw
    assert "Facts to keep in mind:" in text and "key: Ilse" in text
    shot(page, "13-memory-in-prompt")


def test_12_repetition_settings_are_saved_and_used_by_the_next_step(page):
    tab(page, "Repetition")
    page.locator("#adapter-status").get_by_text("DITTO adapter").wait_for(timeout=30_000)
    page.locator("#repetition-chart").wait_for(timeout=30_000)
    x_axis = page.locator("#repetition-chart .role-axis[aria-label^='X-axis'] .role-axis-label text")
    x_axis.first.wait_for(timeout=30_000)
    # one whole number per paragraph, not ticks at 1.0, 1.1, ...
    assert x_axis.all_text_contents() == [str(n) for n in range(1, paragraphs(page) + 1)]
    guard = page.locator("#set-guard input")
    assert guard.is_checked()  # the default for a new story
    guard.uncheck()
    page.locator("#set-ngram input").fill("4")
    page.locator("#set-save").click()
    status_says(page, "Repetition settings saved", 30_000)
    shot(page, "14-repetition")
    tab(page, "Write")
    instruction = "Mara climbs to the lamp room and waits for the ferry."
    page.locator("#instruction textarea").fill(instruction)
    page.locator("#step").click()
    wait_paragraphs(page, 6, WAIT)
    text = inspect_step(page, instruction)
    assert "sentence guard off" in text and "no-repeat 4-grams" in text and "DITTO adapter on" in text
    tab(page, "Repetition")
    assert not page.locator("#set-guard input").is_checked()  # saved with the story


def _download(page, fmt: str, tmp: Path) -> Path:
    page.locator("#export-format").get_by_text(dict(epub="EPUB", json="JSON backup")[fmt]).click()
    page.locator("#export").click()
    # this export's own line ("NAME.json: N bytes, ready to download"), not the one of the export before
    page.wait_for_function("(ext) => { const t = document.querySelector('#status').innerText;"
                           " return t.includes(ext + ':') && t.includes('ready to download'); }",
                           arg=f".{fmt}", timeout=60_000)
    page.locator("#download").get_by_text(f".{fmt}").wait_for(timeout=30_000)
    with page.expect_download(timeout=60_000) as arriving:
        page.locator("#download").click()
    path = tmp / arriving.value.suggested_filename
    arriving.value.save_as(path)
    return path


def _upload(page, path: Path) -> None:
    clear = page.locator("#import-file button[aria-label=Clear]")
    if clear.count():  # the file of the import before is still shown: take it away first
        clear.first.click()
    page.locator("#import-file input[type=file]").set_input_files(str(path))
    page.locator(f'#import-file td.filename[aria-label="{path.name}"]').wait_for(timeout=30_000)  # uploaded
    page.locator("#import").click()


def test_13_export_an_epub_and_a_backup_then_import_the_backup_and_a_draft(page, tmp_path):
    import zipfile

    from tests.test_formats import epubcheck

    manuscript = page.locator("#manuscript").inner_text()
    count = paragraphs(page)
    tab(page, "Files")
    epub = _download(page, "epub", tmp_path)
    assert epub.suffix == ".epub"
    check = epubcheck(epub)
    assert check.returncode == 0, check.stdout + check.stderr
    with zipfile.ZipFile(epub) as z:
        assert "Chapter Two: The Door" in z.read(next(n for n in z.namelist() if n.endswith("nav.xhtml"))).decode()
    backup = _download(page, "json", tmp_path)
    shot(page, "15-export")
    _upload(page, backup)
    status_says(page, "Imported", 120_000)
    assert paragraphs(page) == count and page.locator("#manuscript").inner_text() == manuscript  # a copy, whole
    draft = tmp_path / "harbour.md"
    draft.write_text("# The Harbour\n\n## One\n\nThe ferry left at dawn.\n\nIlse waved from the quay.\n\n"
                     "## Two\n\nBy noon the fog had swallowed the island.\n")
    page.locator("#import-premise textarea").fill("A ferry captain and her sister lose each other in the fog.")
    _upload(page, draft)
    status_says(page, "harbour.md", WAIT)  # the draft is imported (the model writes its memory and plans)
    wait_paragraphs(page, 3, WAIT)
    assert page.locator("#manuscript h2").inner_text() == "The Harbour"
    assert [h.inner_text() for h in page.locator("#manuscript h3").all()] == ["One", "Two"]
    assert page.locator("#plans input[type=radio]").count() == 3  # written by the model: go on from the draft
    assert page.locator("#short-memory textarea").input_value().strip()
    shot(page, "16-imported-draft")


UNCLEAR = "She takes it up there after the thing with him, and then they both see what it means."


def test_14_clarify_an_instruction_pick_a_wording_and_write_from_it(page, model):
    tab(page, "Write")
    page.locator("#instruction textarea").fill(UNCLEAR)
    model.hold("paraphrase")  # the first paraphrase waits until the page has shown the progress
    try:
        page.locator("#clarify").click()
        page.get_by_text(re.compile(r"paraphrase 1 of \d")).first.wait_for(timeout=WAIT)  # progress while it runs
        shot(page, "20-clarify-progress")
    finally:
        model.release()
    page.locator("#sca-candidates").wait_for(timeout=WAIT)
    assert page.locator("#instruction textarea").input_value() == UNCLEAR  # nothing replaced without a pick
    shaded = page.locator("#sca-candidates tr.sca-kept").first.locator(".sca-word")
    assert shaded.count() >= 5 and "of the attribution" in shaded.first.get_attribute("title")
    status_says(page, "wordings ranked", 15_000)
    shot(page, "21-clarified")
    options = page.locator("#wordings label")
    assert options.count() >= 1
    picked = options.first.inner_text().rsplit(" (", 1)[0]  # "the wording (where it came from)"
    options.first.click()
    page.wait_for_function("(t) => document.querySelector('#instruction textarea').value === t", arg=picked)
    before = paragraphs(page)
    page.locator("#step").click()
    wait_paragraphs(page, before + 1, WAIT)
    assert picked in inspect_step(page, picked)  # the picked wording is what the model was given


def test_15_clarify_refuses_bad_input_and_the_auto_setting_is_saved(page):
    spanish = "Una guardiana encuentra una llave en una botella y la lleva al faro después de la pelea."
    page.locator("#premise textarea").fill(spanish)
    page.locator("#clarify-premise").click()
    status_says(page, "does not look like English", 30_000)
    assert page.locator("#premise textarea").input_value() == spanish
    tab(page, "Auto")
    page.locator("#sca-auto input").check()
    status_says(page, "Auto mode now clarifies", 15_000)
    shot(page, "22-clarify-auto")


def test_16_an_entry_changed_in_another_tab_is_not_written_over(page, served):
    service = served[1]
    tab(page, "Memory")
    status_says(page, "memory entries", 30_000)
    page.locator("#memory-table").get_by_text("summary").filter(visible=True).first.click()  # pick an entry
    page.wait_for_function("document.querySelector('#entry-id input').value !== ''", timeout=30_000)
    entry = int(page.locator("#entry-id input").input_value())
    story = int(page.locator("#stories input").input_value().split(":")[0])
    service.memories.update(story, entry, "Another tab wrote this summary.")  # as another tab saves it
    mine = "Mara keeps the second letter in the lamp room."
    page.locator("#entry-text textarea").fill(mine)
    page.locator("#entry-save").click()
    status_says(page, "changed since this page showed it", 30_000)
    assert "Another tab wrote this summary." in page.locator("#status").inner_text()
    assert page.locator("#entry-text textarea").input_value() == mine  # the typed text stays
    assert service.memories.entry(story, entry).text == "Another tab wrote this summary."
    shot(page, "23-entry-refused")
    page.locator("#entry-save").click()  # again, having seen what it replaces
    status_says(page, f"Entry {entry} saved", 30_000)
    assert service.memories.entry(story, entry).text == mine


def in_view(page, selector: str, index: int) -> bool:
    """Whether element `index` of `selector` is inside the manuscript pane's visible box."""
    return page.evaluate("""([selector, index]) => {
        const pane = document.querySelector("#manuscript .ms-pane").getBoundingClientRect();
        const box = document.querySelectorAll(selector)[index].getBoundingClientRect();
        return box.top >= pane.top - 1 && box.bottom <= pane.bottom + 1;
    }""", [selector, index])


def test_17_a_long_manuscript_scrolls_in_its_pane_jumps_to_chapters_and_steps_in_place(page, tmp_path):
    chapters = 12
    draft = tmp_path / "long.md"
    draft.write_text("# The Long Harbour\n\n" + "\n\n".join(
        f"## Chapter {c}\n\n" + "\n\n".join(f"In chapter {c}, paragraph {n}, the ferry crossed the grey water "
                                             "again while Ilse counted the gulls." for n in range(1, 9))
        for c in range(1, chapters + 1)) + "\n")
    tab(page, "Files")
    page.locator("#import-premise textarea").fill("A ferry captain crosses the harbour, chapter after chapter.")
    _upload(page, draft)
    wait_paragraphs(page, chapters * 8, WAIT)
    tab(page, "Write")
    pane = page.locator("#manuscript .ms-pane")
    assert pane.evaluate("p => p.scrollHeight > 2 * p.clientHeight")  # a pane of its own, scrolling
    step = page.locator("#step").bounding_box()
    assert step and step["y"] + step["height"] <= 1100  # the writing controls stay on screen
    assert in_view(page, "#manuscript p", chapters * 8 - 1)  # the newest paragraph in view
    numbers = page.locator("#manuscript p").evaluate_all("ps => ps.map(p => p.dataset.n)")
    assert numbers == [str(n) for n in range(1, chapters * 8 + 1)]  # numbered as Edit and Inspect count
    page.locator("#manuscript .ms-chapters").select_option(label="Chapter 3 (¶ 17)")
    assert in_view(page, "#manuscript h3", 2) and not in_view(page, "#manuscript p", chapters * 8 - 1)
    shot(page, "24-chapter-jump")
    first = page.locator("#manuscript p").first.inner_text()
    page.locator("#instruction textarea").fill("The fog lifts and Ilse sees the far shore.")
    page.locator("#step").click()
    wait_paragraphs(page, chapters * 8 + 1, WAIT)  # the new paragraph joins the ones the page holds
    assert page.locator("#manuscript p").first.inner_text() == first
    assert in_view(page, "#manuscript p", chapters * 8)
    shot(page, "25-long-step")
