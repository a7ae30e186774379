"""The loom: the story's tree of steps (app/service/loom.py), and the Loom tab in the real browser
with the scripted model: a tree built on the page with regenerate and undo, branches switched,
compared and named through the view, and a story of a few hundred steps."""

from __future__ import annotations

import json

import pytest

from common.errors import InvalidInput, NotFound
from storage import repo
from tests.test_service import make_service
from tests.web import (PacedBackend, chromium, paragraphs, pick_plan, scripted_app, shot, start_story, status_says, tab,
                       wait_paragraphs)


def branched(service):
    """A story whose tree forks twice: 1 - 2 - 3a, 3b (regenerated), and 1 - 2 - 3c after an undo."""
    story = service.new_story("A keeper finds a letter from the future.").id
    service.step(story, plan=1)
    first = service.step(story, plan=1)
    service.regenerate(story)
    service.undo(story)
    last = service.step(story, plan=2)
    return story, first.step_ids, last.step_ids


def test_the_tree_holds_every_branch_with_the_manuscript_s_path_marked(db, embedder):
    service, _ = make_service(db, embedder)
    story, first, last = branched(service)
    loom = service.loom.tree(story)
    assert loom.head == last[-1] and len(loom.nodes) == 5  # 1, 2, and three versions of 3
    third = [n for n in loom.nodes if n.number == 3]
    assert [(n.version, n.versions) for n in third] == [(1, 3), (2, 3), (3, 3)]
    assert [n.on_path for n in third] == [False, False, True]
    assert {n.id for n in loom.nodes if n.on_path} == set(last)
    assert all(n.opening and len(n.opening.split()) <= 13 for n in loom.nodes)
    play = service.reading.start(story)  # a reader's scenes are their own, not the manuscript's tree
    service.reading.choose(play.playthrough_id, 1)
    with db.Session() as session:
        [scene] = repo.scene_ids(session, story)
    assert len(service.loom.tree(story).nodes) == 5
    with pytest.raises(NotFound):
        service.loom.compare(story, scene)


def test_a_branch_is_compared_switched_to_and_named(db, embedder):
    service, _ = make_service(db, embedder)
    story, first, last = branched(service)
    now = service.view(story).paragraphs[2]
    compared = service.loom.compare(story, first[-1])
    assert compared.number == 3 and compared.current == last[-1] and compared.current_text == now
    assert (compared.picked.version, compared.picked.versions, compared.picked.on_path) == (1, 3, False)
    assert service.loom.compare(story, last[-1]).current == last[-1]  # the manuscript's own
    switched = service.switch(story, first[-1])
    assert switched.step_ids == first  # the manuscript now ends with the older version
    assert switched.paragraphs[2] == compared.picked_text
    named = service.loom.name(story, first[-1], "  the storm version ")
    assert next(n.label for n in named.nodes if n.id == first[-1]) == "the storm version"
    with pytest.raises(InvalidInput):
        service.loom.name(story, first[-1], "x" * 201)
    assert next(n.label for n in service.loom.name(story, first[-1], "").nodes if n.id == first[-1]) is None
    service.loom.name(story, first[-1], "the storm version")
    copy = service.manuscripts.import_file("story.json", service.manuscripts.export(story, "json").data)
    assert "the storm version" in [n.label for n in service.loom.tree(copy.id).nodes]  # a backup keeps names
    assert json.loads(service.manuscripts.export(story, "json").data)["steps"][2]["label"] == "the storm version"


WAIT = 60_000


@pytest.mark.browser
def test_the_loom_switches_compares_and_names_branches_in_the_browser(tmp_path, embedder):
    with scripted_app(tmp_path, embedder, PacedBackend()) as (url, service), chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        start_story(page, WAIT, ("loom-1", "loom-2"))
        for n in (2, 3):
            pick_plan(page, 0)
            page.locator("#step").click()
            wait_paragraphs(page, n, WAIT)
        third = page.locator("#manuscript p").nth(2).inner_text()
        page.locator("#regenerate").click()
        page.locator("#version").get_by_text("version 2 of 2").wait_for(timeout=WAIT)
        page.locator("#undo").click()
        page.wait_for_function("document.querySelectorAll('#manuscript p').length === 2", timeout=WAIT)
        pick_plan(page, 1)
        page.locator("#step").click()
        page.locator("#version").get_by_text("version 3 of 3").wait_for(timeout=WAIT)
        tab(page, "Loom")
        rows = page.locator("#loom .loom-row")
        rows.nth(4).wait_for(timeout=30_000)
        assert rows.count() == 5 and page.locator("#loom .loom-row.on").count() == 3
        shot(page, "loom-3-tree")
        older = page.locator("#loom .loom-row", has_text="¶ 3 · 1/3")
        older.locator(".loom-cmp").click()
        page.locator("#loom-picked").get_by_text("Paragraph 3, version 1 of 3").wait_for(timeout=30_000)
        assert third[:60] in page.locator("#loom-picked").inner_text()
        assert "In the manuscript now" in page.locator("#loom-current").inner_text()
        page.locator("#loom-name textarea").fill("the first try")
        page.locator("#loom-name-save").click()
        status_says(page, "named «the first try»", 30_000)
        page.locator("#loom .loom-label").get_by_text("the first try").wait_for(timeout=30_000)
        page.locator("#loom .loom-row", has_text="the first try").locator(".loom-go").click()  # one action
        status_says(page, "Switched to another branch", WAIT)
        page.wait_for_function("document.querySelector('#manuscript p:nth-of-type(1)') !== null")
        assert page.locator("#manuscript p").nth(2).inner_text() == third
        assert "1/3" in page.locator("#loom .loom-row.head").inner_text()  # the tree follows
        shot(page, "loom-4-switched")


@pytest.mark.browser
def test_the_loom_shows_a_story_of_a_few_hundred_steps(tmp_path, embedder):
    steps = 300
    draft = "# A Long Crossing\n\n" + "\n\n".join(f"The ferry crossed for the {n}th time while Ilse counted gulls."
                                                  for n in range(1, steps + 1))
    with scripted_app(tmp_path, embedder, PacedBackend()) as (url, service), chromium() as browser:
        story = service.manuscripts.import_draft(draft.encode(), "long.md", "A ferry crosses the harbour.").id
        steps = len(service.regenerate(story).paragraphs)  # and a fork at the end
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        box = page.locator("#stories input")
        box.fill(str(story))
        box.press("Enter")
        page.wait_for_function(f"document.querySelectorAll('#manuscript p').length === {steps}", timeout=WAIT)
        tab(page, "Loom")
        page.locator("#loom .loom-row").nth(steps).wait_for(timeout=30_000)
        assert page.locator("#loom .loom-row").count() == steps + 1
        assert page.locator("#loom .loom-row.head").is_visible()  # scrolled to where the manuscript ends
        assert paragraphs(page) == steps
