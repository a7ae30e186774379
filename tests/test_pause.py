"""[PAUSE] tokens: where they go, the token in a real tokenizer and model, and a short real tuning."""

from __future__ import annotations

import pytest

from generation.adapters import AdapterUnavailable
from generation.pause import PAUSE, PauseSettings, insert_pauses, strip_pauses
from generation.pause_tuning import TuneConfig
from common.errors import InvalidInput
from tests.conftest import TEXTS

LONG = ("Mara climbed the stairs, counted the steps, and stopped at the lamp room. The glass rattled in the wind; "
        "below, the sea threw itself at the rocks. She read the letter again: it was dated fifty years ahead.")


def test_pauses_go_after_each_clause_and_sentence_but_not_at_the_end():
    out = insert_pauses(LONG, PauseSettings(per_boundary=2))
    assert out.count(PAUSE) == 2 * 7  # 3 commas, 2 sentence ends inside, 1 semicolon, 1 colon
    assert "stairs, [PAUSE] [PAUSE] counted" in out and not out.endswith(PAUSE)
    assert strip_pauses(out) == " ".join(LONG.split())


def test_sentence_only_pauses_and_the_length_threshold():
    assert insert_pauses(LONG, PauseSettings(clauses=False)).count(PAUSE) == 2
    assert insert_pauses("A short plan, with a comma.", PauseSettings(min_words=25)) == "A short plan, with a comma."
    assert insert_pauses('He said "Go." Then he left.', PauseSettings(min_words=0)) == \
        'He said "Go." [PAUSE] Then he left.'


@pytest.mark.parametrize("bad", [dict(per_boundary=0), dict(per_boundary=9), dict(min_words=-1)])
def test_pause_settings_are_checked(bad):
    with pytest.raises(InvalidInput):
        PauseSettings(**bad)


def test_a_passage_too_short_for_pauses_is_refused():
    with pytest.raises(InvalidInput, match="no pauses"):
        TuneConfig(prompt_words=10, pauses=PauseSettings(min_words=25)).check()


@pytest.fixture(scope="module")
def source(model_folder):
    """The embedded model's weights, as a folder that loads at once (tests/conftest.py)."""
    from generation.local import ModelSource

    return ModelSource(model_folder, None)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, source):
    """A pause adapter tuned for two steps (enough to change the pause embedding), and its metadata."""
    from generation.local import load_model
    from generation.pause_tuning import tune

    model, tokenizer = load_model(source, "cpu")
    folder = tmp_path_factory.mktemp("pause") / "adapter"
    meta = tune(model, tokenizer, [TEXTS / "the-great-gatsby.txt"], folder,
                TuneConfig(steps=2, batch=2, eval_samples=4))
    return folder, meta


@pytest.mark.model
def test_the_pause_token_is_added_once_tuned_saved_and_attached(tuned, source, tmp_path):
    import torch

    from generation.local import load_model
    from generation.pause import add_pause_token, attach_pauses

    model, tokenizer = load_model(source, "cpu")
    rows = model.get_input_embeddings().weight.shape[0]
    pid = add_pause_token(model, tokenizer)
    assert add_pause_token(model, tokenizer) == pid  # idempotent
    assert tokenizer(f"one {PAUSE} two", add_special_tokens=False)["input_ids"].count(pid) == 1
    assert model.get_input_embeddings().weight.shape[0] == max(rows, pid + 1)

    folder, meta = tuned
    losses = meta["held_out_loss"]
    assert set(losses) == {"no_pauses_before", "pauses_before", "pauses_after", "no_pauses_after"}
    assert all(v > 0 for v in losses.values())
    assert meta["token_id"] == pid and meta["train_passages"] > 100

    served, tokenizer = load_model(source, "cpu")
    served, settings = attach_pauses(served, tokenizer, folder)
    assert settings == PauseSettings() and not any(p.requires_grad for p in served.parameters())
    trained_row = served.get_input_embeddings().weight[pid]
    fresh, fresh_tokenizer = load_model(source, "cpu")
    add_pause_token(fresh, fresh_tokenizer)
    assert not torch.allclose(trained_row, fresh.get_input_embeddings().weight[pid])  # the embedding was tuned

    with pytest.raises(AdapterUnavailable, match="no pause adapter"):
        attach_pauses(*load_model(source, "cpu"), tmp_path / "missing")


@pytest.mark.model
def test_the_backend_writes_with_pauses_in_the_prompt_and_never_writes_one(tuned, source):
    from generation.backend import Request
    from generation.local import TransformersBackend

    folder, _ = tuned
    backend = TransformersBackend(str(source.folder), "cpu", pause_adapter=folder)
    long = Request(messages=[{"role": "user", "content": LONG}], max_new_tokens=40, temperature=1.2, seed=3)
    assert backend.render(long).count(PAUSE) == 7 and PAUSE not in backend.render(
        Request(messages=[{"role": "user", "content": "Write one line."}]))
    assert "[PAUSE]" in backend.describe()
    for seed in range(3):
        assert PAUSE not in "".join(backend.generate(Request(messages=long.messages, max_new_tokens=40,
                                                             temperature=1.2, seed=seed)))


@pytest.mark.model
def test_proxy_tuning_steers_a_model_by_the_small_models_difference(tuned, source):
    import torch
    from transformers import LogitsProcessorList

    from generation.local import load_model
    from generation.pause import attach_pauses, insert_pauses
    from generation.proxy import ProxyTuned

    folder, _ = tuned
    base, tokenizer = load_model(source, "cpu")
    expert, expert_tokenizer = load_model(source, "cpu")
    expert, settings = attach_pauses(expert, expert_tokenizer, folder)

    def ids(tok, text):
        chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return tok(chat, return_tensors="pt", add_special_tokens=False)["input_ids"]

    plain, paused = ids(tokenizer, LONG), ids(expert_tokenizer, insert_pauses(LONG, settings))

    def greedy(model, prompt, processor=None, suppress=None):
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id,
                                 logits_processor=LogitsProcessorList([processor] if processor else []),
                                 suppress_tokens=suppress)
        return out[0, prompt.shape[1]:].tolist()

    alone = greedy(base, plain)
    # expert and anti-expert the same: no steering at all
    assert greedy(base, plain, ProxyTuned(base, plain, base, plain, start=plain.shape[1])) == alone
    # the base is the anti-expert: the proxy-tuned base writes exactly what the tuned expert writes
    expert_alone = greedy(expert, paused, suppress=[expert_tokenizer.convert_tokens_to_ids(PAUSE)])
    assert greedy(base, plain, ProxyTuned(expert, paused, base, plain, start=plain.shape[1])) == expert_alone
    with pytest.raises(ValueError):
        ProxyTuned(expert, paused, base, plain, start=0, alpha=0)
