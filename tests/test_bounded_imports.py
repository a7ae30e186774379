"""Imports are bounded and can be cancelled (through the service, real SQLite and embedder, the
scripted model): limits on a draft's paragraphs and words and on a backup's size refuse a file
before it costs much, and a cancel at any point, even inside the saving transaction, writes
nothing."""

from __future__ import annotations

import threading
import time

import pytest

from common.errors import Busy, Cancelled, InvalidInput
from tests.test_service import counts, make_service

DRAFT = "\n\n".join(f"Paragraph {n}: the lighthouse keeper climbs the stairs once more." for n in range(40))


def test_a_draft_of_millions_of_empty_paragraphs_is_refused_at_once(db, embedder):
    service, _ = make_service(db, embedder)
    blank = b"a\n\n" * 6_666_666  # 20 MB: 35 s to read whole before, and gigabytes of lists
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="more than 20,000 paragraphs, the most one import takes"):
        service.manuscripts.import_file("blank.txt", blank)
    print(f"refused in {time.perf_counter() - started:.1f} s")
    assert counts(db) == (0, 0, 0)


@pytest.mark.parametrize("limit, name, raw, message", [
    ({"draft_paragraphs": 39}, "d.txt", DRAFT.encode(), "more than 39 paragraphs"),
    ({"draft_words": 399}, "d.md", DRAFT.encode(), "d.md has 400 words; one import takes at most 399"),
])
def test_drafts_over_the_limits_are_refused(db, embedder, limit, name, raw, message):
    service, _ = make_service(db, embedder, **limit)
    with pytest.raises(InvalidInput, match=message):
        service.manuscripts.import_file(name, raw)
    assert counts(db) == (0, 0, 0)
    service, _ = make_service(db, embedder)  # the same draft within the default limits
    assert len(service.manuscripts.import_file(name, raw).paragraphs) == 40


def test_a_backup_over_the_limit_is_refused_before_it_is_read(db, embedder, story_backup):
    raw = story_backup.read_bytes()
    service, _ = make_service(db, embedder, backup_bytes=len(raw) - 1)
    with pytest.raises(InvalidInput, match=f"has {len(raw):,} bytes; a backup may have at most {len(raw) - 1:,}"):
        service.manuscripts.import_file("story.json", raw)
    assert counts(db) == (0, 0, 0)


@pytest.mark.parametrize("name, when", [
    ("draft.txt", "Embedded"),  # while embedding
    ("draft.txt", "The model writes"),  # cancelled before the model's summary: stops inside the transaction
    ("story.json", "Saving"),  # a backup: stops inside its transaction
])
def test_a_cancelled_import_writes_nothing(db, embedder, story_backup, name, when):
    service, _ = make_service(db, embedder)
    raw = story_backup.read_bytes() if name.endswith(".json") else DRAFT.encode()
    seen: list[str] = []
    with service.manuscripts.importing() as cancel:
        def progress(line: str) -> None:
            seen.append(line)
            if line.startswith(when):
                service.manuscripts.cancel_import()  # as the page's Cancel button does

        with pytest.raises(Cancelled, match="the import was cancelled; nothing was written"):
            service.manuscripts.import_file(name, raw, on_progress=progress, cancel=cancel)
    assert any(line.startswith(when) for line in seen), seen
    assert counts(db) == (0, 0, 0)
    with pytest.raises(InvalidInput, match="You are not importing anything"):
        service.manuscripts.cancel_import()


def test_one_import_at_a_time_per_person(db, embedder):
    service, _ = make_service(db, embedder)
    ada, bob = service.as_user("ada"), service.as_user("bob")
    with ada.manuscripts.importing():
        with pytest.raises(Busy, match="importing a file already"), ada.manuscripts.importing():
            pass
        with bob.manuscripts.importing() as bobs:  # another person imports at the same time
            assert isinstance(bobs, threading.Event)
        with pytest.raises(InvalidInput):
            bob.manuscripts.cancel_import()  # and cannot cancel ada's


def test_a_step_is_answered_while_someone_imports_a_novel_which_they_cancel(tmp_path, embedder):
    """Through the real page: ada imports a draft of 3,000 paragraphs (a minute or so of
    embedding); bob starts a story and steps meanwhile, and is answered before her import ends;
    then ada cancels, and nothing of her import is kept."""
    from gradio_client import Client, handle_file

    from tests.fakes import ScriptedBackend
    from tests.test_web_accounts import page
    from tests.web import scripted_app

    novel = tmp_path / "novel.txt"
    novel.write_text("\n\n".join(f"Chapter of the keeper, page {n}: Mara counted {n} gulls over the grey harbour."
                                 for n in range(3000)))
    with scripted_app(tmp_path, embedder, ScriptedBackend()) as (url, service):
        ada, bob = Client(url, verbose=False), Client(url, verbose=False)
        importing = ada.submit(handle_file(str(novel)), "", api_name="/import_story")
        for _ in range(600):  # until her import is embedding
            if any("Embedded" in str(out) for out in importing.outputs()):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the import never got to embedding: {importing.outputs()}")
        started = page(bob.predict("A keeper finds a letter from the future.", "", api_name="/start"))
        assert "Mara" in started["manuscript"], started["status"]
        stepped = page(bob.predict(1, "", api_name="/step"))
        assert stepped["pane"]["count"] == started["pane"]["count"] + 1, stepped["status"]
        assert [i for i, _, _ in stepped["pane"]["at"]] == [1]  # the new paragraph, not the manuscript again
        assert not importing.done()  # bob was answered while ada's import ran
        assert "Cancelling the import" in ada.predict(api_name="/cancel_import")[-1]
        final = page(importing.result())
        assert final["status"] == "**Nothing was written:** the import was cancelled; nothing was written"
        assert [title for title, _ in ada.predict(api_name="/list_own_stories")["choices"]] == \
            [title for title, _ in bob.predict(api_name="/list_own_stories")["choices"]]
        assert len(service.list_stories()) == 1  # bob's story only
