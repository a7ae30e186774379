"""DITTO with the real embedded model: a short real training run through the CLI, the adapter it
writes, bad adapters, the guard breaking a real loop, and evaluation."""

import json
import os
import shutil
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import torch

from generation.backend import Decoding, Request
from generation.adapters import AdapterUnavailable, adapter_off, attach_adapter
from generation.evaluation import PLAIN, eval_samples, evaluate
from generation.metrics import repeated_sentences
from generation.local import ModelSource, TransformersBackend, load_model

pytestmark = pytest.mark.model

from tests.conftest import TEXTS

WIKI = TEXTS / "wikitext-2-valid.txt"
GATSBY = TEXTS / "the-great-gatsby.txt"


@pytest.fixture(scope="module")
def storyloom(model_folder):
    """`storyloom` in a process of its own, on the embedded model's weights as a folder that
    loads at once (tests/conftest.py)."""
    env = {**os.environ, "STORYLOOM_MODEL": str(model_folder)}

    def run(*args, timeout=600):
        return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, storyloom):
    """An adapter from a real (tiny) training run through `storyloom ditto train`."""
    out = tmp_path_factory.mktemp("ditto") / "adapter"
    done = storyloom("ditto", "train", "--corpus", str(WIKI), "--corpus", str(GATSBY), "--out", str(out),
                     "--steps", "4", "--batch", "2",
                     "--length", "64", "--lora", "--lr", "1e-2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DITTO training" in done.stderr and "4/4" in done.stderr  # the progress bar
    return out


@pytest.fixture(scope="module")
def base(model_folder):
    return load_model(ModelSource(model_folder, None), "cpu")


def test_training_writes_a_small_adapter_with_its_record(trained):
    files = {p.name for p in trained.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "storyloom-ditto.json"} <= files
    assert (trained / "adapter_model.safetensors").stat().st_size < 8_000_000
    meta = json.loads((trained / "storyloom-ditto.json").read_text())
    assert meta["kind"] == "lora" and meta["config"]["steps"] == 4 and meta["config"]["lam"] == 0.5
    assert meta["command"].startswith("storyloom ditto train --corpus") and meta["seconds"] > 0
    assert [Path(c["path"]).name for c in meta["corpora"]] == [WIKI.name, GATSBY.name]
    assert all(c["held_out_paragraphs"] > 0 for c in meta["corpora"]) and meta["ditto_samples"] > 1000
    assert sum(v["batches"] for v in meta["loss"].values()) == 4


def test_the_adapter_changes_the_model_and_can_be_switched_off(trained, base):
    model, tokenizer = base
    ids = torch.tensor([tokenizer("The castle was built in the twelfth century .")["input_ids"]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    wrapped = attach_adapter(model, trained)  # merged into the weights
    try:
        with torch.inference_mode():
            after = wrapped(input_ids=ids).logits
            with adapter_off(wrapped):
                off = wrapped(input_ids=ids).logits
            again = wrapped(input_ids=ids).logits
        assert not torch.allclose(before, after, atol=1e-4)
        assert torch.allclose(before, off, atol=1e-4)  # unmerged for the block (fp32 rounding aside)
        assert torch.allclose(after, again, atol=1e-4)  # and merged again after it
        assert all(m.merged for m in wrapped.modules() if hasattr(m, "merged_adapters"))
    finally:
        wrapped.unmerge_adapter()
        wrapped.unload()  # the module's base model goes back to how it was


def test_analyze_draws_the_curves_with_and_without_the_adapter(trained, storyloom, tmp_path):
    done = storyloom("ditto", "analyze", "--adapter", str(trained), "--corpus", str(GATSBY), "--sentences", "2",
                     "--repeats", "3", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    curves = json.loads((tmp_path / "repetition.json").read_text())["curves"]
    assert list(curves) == ["base model", "DITTO"] and (tmp_path / "repetition.png").stat().st_size > 1000
    assert all(len(c["token_probability"]) == 3 and c["sentences"] == 2 for c in curves.values())


def test_bad_adapters_are_refused_clearly(trained, base, tmp_path):
    model, _ = base
    with pytest.raises(AdapterUnavailable, match="no DITTO adapter"):
        attach_adapter(model, tmp_path / "missing")
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    meta = json.loads((other / "storyloom-ditto.json").read_text())
    meta["base_fingerprint"]["hidden_size"] = 2048
    (other / "storyloom-ditto.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterUnavailable, match="made for another model.*hidden_size 2048 != 576"):
        attach_adapter(model, other)
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterUnavailable, match="cannot load the DITTO adapter"):
        attach_adapter(model, broken)


def test_a_missing_adapter_never_stops_the_app_from_writing(model_folder, tmp_path):
    backend = TransformersBackend(str(model_folder), "cpu", adapter=tmp_path / "nowhere")
    request = Request([{"role": "user", "content": "Describe the sea in one sentence."}], max_new_tokens=12,
                      temperature=0, decoding=Decoding())
    with closing(backend.generate(request)) as chunks:
        text = "".join(chunks)
    assert text.strip()
    assert "no DITTO adapter" in backend.adapter_problem and "base model" in backend.describe()
    assert not backend.has_adapter


def test_the_guard_breaks_a_real_loop(model_folder):
    backend = TransformersBackend(str(model_folder), "cpu")
    loop = "The bell rang in the tower. The sea was grey and cold. " * 3
    messages = [{"role": "user", "content": "Continue the text exactly as it goes on."}]

    def write(decoding):
        request = Request(messages, reply_prefix=loop, max_new_tokens=60, min_new_tokens=60, temperature=0,
                          decoding=decoding)
        with closing(backend.generate(request)) as chunks:
            return "".join(chunks)

    plain = write(Decoding(guard=False, repetition_penalty=1.0))
    guarded = write(Decoding(guard=True, guard_lambda=0.1, repetition_penalty=1.0))
    assert repeated_sentences(plain, loop) >= 2, plain  # the model alone keeps copying
    assert repeated_sentences(guarded, loop) < repeated_sentences(plain, loop), guarded


def test_evaluation_reports_every_measure(base):
    model, tokenizer = base
    samples = eval_samples(tokenizer, [WIKI.read_text()[-20000:]], "wiki", 2, prefix_len=20, continuation_len=16)
    assert len(samples) == 2 and all(len(s.prefix) == 20 and len(s.reference) == 16 for s in samples)
    plain = evaluate(model, tokenizer, samples, PLAIN, batch=2)
    guarded = evaluate(model, tokenizer, samples, Decoding(guard=True, repetition_penalty=1.0), batch=2)
    for result in (plain, guarded):
        assert result["samples"] == 2 and 1 < result["perplexity"] < 1000 and result["tokens_per_second"] > 0
        assert all(0 <= result[k] <= 1 for k in ("rep_2", "rep_3", "rep_4", "rep_w", "rep_r", "sentence_repetition"))
    assert plain["impossible_reference_tokens"] == 0
    # perplexity is taken under the decoding distribution; the guard barely touches real text
    assert 0.8 < guarded["perplexity"] / plain["perplexity"] < 1.25


def test_cli_refuses_bad_input_before_any_work(storyloom, tmp_path):
    done = storyloom("ditto", "train", "--corpus", str(WIKI), "--out", str(tmp_path / "x"), "--lambda", "0")
    assert done.returncode == 2 and "lambda must be in (0, 1]" in done.stderr
    one_line = tmp_path / "one.txt"
    one_line.write_text("The rain fell on the quiet town all night.\n" * 300)
    done = storyloom("ditto", "train", "--corpus", str(one_line), "--out", str(tmp_path / "y"))
    assert done.returncode == 1 and "distinct usable sentences" in done.stderr and not (tmp_path / "y").exists()
    done = storyloom("ditto", "eval", "--corpus", str(WIKI), "--adapter", str(tmp_path / "missing"), "--samples", "1")
    assert done.returncode == 1 and "no DITTO adapter" in done.stderr


def test_full_fine_tuning_writes_a_model_that_eval_can_load(storyloom, tmp_path):
    out = tmp_path / "full"
    done = storyloom("ditto", "train", "--corpus", str(WIKI), "--out", str(out), "--steps", "1", "--batch", "1",
                     "--length", "48")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "config.json").is_file() and json.loads((out / "storyloom-ditto.json").read_text())["kind"] == "full"
    report = tmp_path / "eval.json"
    done = storyloom("ditto", "eval", "--model", str(out), "--corpus", str(WIKI), "--samples", "2", "--prefix", "16",
                     "--continuation", "8", "--json", str(report))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["samples"] == 2 and result["model"] == str(out) and result["perplexity"] > 1
    assert json.loads(done.stdout)["rep_4"] == result["rep_4"]
