"""Long-term memory with the real embedder, real FAISS and a real SQLite file."""

import numpy as np
import pytest

from memory.index import VectorIndex
from memory.longterm import LongTermMemory, chunks
from storage import repo
from common.errors import InvalidInput, NotFound

FACTS = [
    "The lighthouse keeper Mara keeps a brass telescope that belonged to her grandfather.",
    "The village baker, Tomas, sells rye bread every Tuesday at the harbour.",
    "A red fishing boat called the Kestrel sank near the northern reef in a winter storm.",
    "Mara is afraid of deep water because she nearly drowned as a child.",
    "The letter in the bottle was written with violet ink and signed with the letter M.",
]


class CountingEmbedder:
    """The real embedder, counting how many texts it was asked to encode."""

    def __init__(self, real):
        self.real, self.encoded = real, 0

    @property
    def dim(self):
        return self.real.dim

    def encode(self, texts):
        self.encoded += len(texts)
        return self.real.encode(texts)


@pytest.fixture
def story_id(db):
    with db.Session.begin() as s:
        return repo.create_story(s, title="T", premise="P").id


def _add_facts(db, memory, story_id):
    with db.Session.begin() as s:
        return [e.id for e in memory.add(s, story_id, FACTS, "paragraph")]


def test_vector_index_matches_exact_cosine_and_removes():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(8, use_gpu=False)
    index.add(np.arange(100, 150), vectors)
    query = vectors[7]
    expected = np.argsort(-(vectors @ query))[:5] + 100
    assert [i for i, _ in index.search(query, 5)] == list(expected)
    index.remove([107])
    assert 107 not in [i for i, _ in index.search(query, 5)]
    assert len(index) == 49


def clustered(n, dim=32, centers=50, seed=0):
    """Unit vectors around random centers, like sentence embeddings of a story's passages."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centers, dim))
    points = middle[rng.integers(0, centers, n)] + 0.35 * rng.normal(size=(n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_a_large_index_becomes_an_ivf_with_high_recall_and_keeps_removal():
    vectors = clustered(6000)
    index = VectorIndex(32, use_gpu=False, exact_limit=2000)
    index.add(np.arange(3000), vectors[:3000])  # past the limit: trained on 3,000
    assert not index.exact and index.trained_on == 3000
    index.add(np.arange(3000, 6000), vectors[3000:])  # not yet 4 times as many: no retraining
    assert index.trained_on == 3000 and len(index) == 6000
    queries = clustered(100, seed=1)
    found = 0
    for query in queries:
        exact = set(np.argsort(-(vectors @ query))[:8])
        found += len(exact & {i for i, _ in index.search(query, 8)})
    assert found / 800 >= 0.95
    ids, held = index.contents()
    assert sorted(ids) == list(range(6000)) and np.allclose(held[np.argsort(ids)], vectors)
    index.remove(range(100))
    assert len(index) == 5900 and min(i for i, _ in index.search(vectors[5], 50)) >= 100
    assert len(index.search(queries[0], 5900)) == 5900  # asking for everything gets everything
    index.add(np.arange(6000, 13000), clustered(7000, seed=2))  # four times what it was trained on
    assert index.trained_on == 12900


def test_search_finds_the_fact_by_meaning(db, embedder, story_id):
    memory = LongTermMemory(embedder, use_gpu=False)
    ids = _add_facts(db, memory, story_id)
    with db.Session() as s:
        hits = memory.search(s, story_id, "What is Mara scared of?", k=2)
    assert hits[0].entry_id == ids[3]
    assert hits[0].score > hits[1].score
    assert 0 < hits[0].score <= 1.0001


def test_update_reembeds_and_delete_removes(db, embedder, story_id):
    memory = LongTermMemory(embedder, use_gpu=False)
    ids = _add_facts(db, memory, story_id)
    with db.Session.begin() as s:
        memory.update(s, ids[1], "Tomas the baker is secretly a retired smuggler of Spanish wine.")
    with db.Session() as s:
        assert memory.search(s, story_id, "who smuggled wine?", k=1)[0].entry_id == ids[1]
    with db.Session.begin() as s:
        memory.delete(s, ids[1])
    with db.Session() as s:
        assert ids[1] not in [h.entry_id for h in memory.search(s, story_id, "who smuggled wine?", k=5)]


def test_a_new_process_rebuilds_the_index_from_stored_vectors_without_reembedding(db, embedder, story_id):
    _add_facts(db, LongTermMemory(embedder, use_gpu=False), story_id)
    counting = CountingEmbedder(embedder)
    fresh = LongTermMemory(counting, use_gpu=False)  # as after a restart: no index in memory
    with db.Session() as s:
        hits = fresh.search(s, story_id, "a boat that sank", k=1)
    assert "Kestrel" in hits[0].text
    assert counting.encoded == 1  # only the query; the five entries came from the database


def test_an_index_left_behind_by_another_writer_catches_up(db, embedder, story_id):
    reader = LongTermMemory(embedder, use_gpu=False)
    ids = _add_facts(db, reader, story_id)
    with db.Session() as s:
        reader.search(s, story_id, "anything", k=1)  # index built at this version
    other = LongTermMemory(embedder, use_gpu=False)  # another process writes
    with db.Session.begin() as s:
        other.delete(s, ids[0])
        [new] = other.add(s, story_id, ["An albatross nests on the lighthouse gallery every spring."], "note")
    with db.Session() as s:
        hits = reader.search(s, story_id, "a seabird nesting", k=5)
        assert hits[0].entry_id == new.id
        assert ids[0] not in {h.entry_id for h in hits}
        assert len(reader.sync(s, story_id).index) == len(FACTS)


def test_a_rolled_back_transaction_leaves_index_and_database_agreeing(db, embedder, story_id):
    memory = LongTermMemory(embedder, use_gpu=False)
    _add_facts(db, memory, story_id)
    with pytest.raises(RuntimeError), db.Session.begin() as s:
        memory.add(s, story_id, ["A note about a glass harpoon that never lands."], "note")
        assert memory.search(s, story_id, "glass harpoon", k=1)[0].text.startswith("A note about a glass")
        raise RuntimeError("the process died before commit")
    with db.Session() as s:  # the index saw the uncommitted note inside the transaction; now it must not
        assert "harpoon" not in memory.search(s, story_id, "glass harpoon", k=1)[0].text
        assert len(memory.sync(s, story_id).index) == len(repo.memory_revisions(s, story_id)) == len(FACTS)
    with db.Session.begin() as s:  # a later change is still seen (versions of rolled-back work never recur)
        memory.add(s, story_id, ["A committed note about a copper bell."], "note")
    with db.Session() as s:
        assert memory.search(s, story_id, "copper bell", k=1)[0].text.startswith("A committed note")


def test_search_can_keep_only_the_current_branch(db, embedder, story_id):
    memory = LongTermMemory(embedder, use_gpu=False)
    with db.Session.begin() as s:
        story = repo.get_story(s, story_id)
        a = repo.add_step(s, story, parent=None, paragraph="a", short_memory="m")
        b = repo.add_step(s, story, parent=a, paragraph="b", short_memory="m")
        memory.add(s, story_id, ["Mara paints the door blue."], "paragraph", step_id=a.id)
        memory.add(s, story_id, ["Mara paints the door green."], "paragraph", step_id=b.id)
        memory.add(s, story_id, ["Note: the door matters."], "note")
    with db.Session() as s:
        hits = memory.search(s, story_id, "door colour", k=5, only_steps={a.id})
        assert {h.text for h in hits} == {"Mara paints the door blue.", "Note: the door matters."}
        hits = memory.search(s, story_id, "door colour", k=5, exclude_steps={a.id})
        assert "Mara paints the door blue." not in {h.text for h in hits}


def test_bad_input_is_refused(db, embedder, story_id):
    memory = LongTermMemory(embedder, use_gpu=False)
    with db.Session.begin() as s:
        with pytest.raises(InvalidInput, match="empty"):
            memory.add(s, story_id, ["   "], "note")
        with pytest.raises(InvalidInput, match="kind"):
            memory.add(s, story_id, ["x"], "gossip")
        with pytest.raises(NotFound):
            memory.update(s, 12345, "x")
    with db.Session() as s:
        assert memory.search(s, story_id, "x" * 50_000, k=3) == []  # empty memory, huge query: fine


def test_chunks_split_at_sentences():
    text = " ".join(f"Sentence number {i} is here." for i in range(60))
    pieces = chunks(text, max_words=50)
    assert all(len(p.split()) <= 50 for p in pieces)
    assert " ".join(pieces) == text


def test_a_deleted_entry_id_is_never_reused(db, embedder, story_id):
    memory = LongTermMemory(embedder, use_gpu=False)
    ids = _add_facts(db, memory, story_id)
    with db.Session() as s:
        memory.search(s, story_id, "anything", k=1)  # the index knows the last id
    with db.Session.begin() as s:
        memory.delete(s, ids[-1])
        [new] = memory.add(s, story_id, ["A brand new fact about a silver key."], "note")
    assert new.id > ids[-1]
    with db.Session() as s:
        assert memory.search(s, story_id, "silver key", k=1)[0].entry_id == new.id


def test_the_embedder_runs_in_bfloat16_only_where_the_hardware_has_it_and_gives_float32_vectors(embedder):
    from common.errors import StoryloomError
    from memory.embedder import Embedder, native_bfloat16

    with pytest.raises(StoryloomError, match="dtype must be one of auto, float32, bfloat16"):
        Embedder(dtype="float16")
    texts = ["Mara climbed the spiral stairs of the lighthouse.", "Tomas baked bread before dawn.", ""]
    exact = Embedder(dtype="float32").encode(texts)
    quick = Embedder(dtype="bfloat16").encode(texts)
    assert quick.dtype == exact.dtype == np.float32
    assert np.allclose(np.linalg.norm(quick, axis=1), 1.0, atol=1e-6)
    assert (quick * exact).sum(axis=1).min() > 0.999  # the same vectors, for retrieval
    embedder.encode(["loaded"])
    assert embedder.dtype == ("bfloat16" if native_bfloat16("cpu") else "float32")  # the session's, on "auto"
