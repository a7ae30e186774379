"""Recall of long-term memory on a 300-paragraph story with 20 facts planted in the first 20
(benchmarks/longstory.py): real SQLite file, real embedder, real FAISS, no model."""

import pytest

from benchmarks.longstory import FACTS, story
from benchmarks.memory_recall import LongStory
from memory.longterm import LongTermMemory


@pytest.fixture(scope="module")
def long_story(tmp_path_factory, embedder):
    from storage.db import open_database, sqlite_url

    db = open_database(sqlite_url(tmp_path_factory.mktemp("recall") / "recall.db"))
    written = LongStory(db, LongTermMemory(embedder, use_gpu=False))
    written.extend(story(300))
    yield written
    db.close()


def test_twenty_planted_facts_are_recalled_at_step_300(long_story):
    recall, ranks = long_story.recall(k=5)
    assert len(ranks) == len(FACTS) == 20
    assert recall >= 0.9, ranks


def test_fusing_meaning_and_words_recalls_at_least_what_either_ranking_alone_does(long_story):
    fused, _ = long_story.recall(k=5)
    assert fused >= long_story.recall(k=5, way="meaning, plan")[0]
    assert fused >= long_story.recall(k=5, way="words, plan")[0]
    # asking with the plan and the recent text as one text (storyloom's first way) recalls far less
    assert long_story.recall(k=5, way="meaning, plan+recent")[0] < fused - 0.3
