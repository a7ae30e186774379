"""The local transformers backend with the embedded SmolLM2 GGUF."""

from contextlib import closing

import pytest

from generation.backend import Request
from common.errors import ModelUnavailable
from generation.local import TransformersBackend, embedded_model, resolve_model


@pytest.fixture(scope="module")
def backend():
    backend = TransformersBackend()
    backend.load()
    return backend


def ask(text, **settings):
    return Request(messages=[{"role": "user", "content": text}], **settings)


def test_model_paths_resolve_or_fail_clearly(tmp_path):
    assert embedded_model().gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert resolve_model(None) == embedded_model()
    with pytest.raises(ModelUnavailable, match="model not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelUnavailable, match="no config.json"):
        resolve_model(str(tmp_path))
    gguf = embedded_model()
    assert resolve_model(str(gguf.folder / gguf.gguf_file)) == gguf


def test_the_backend_says_what_it_can_do_before_it_loads(tmp_path):
    local = TransformersBackend(adapter=tmp_path)
    assert local.exposes_logits and local.gradients is local  # SCA's scorer is the backend itself
    assert local.describe() == f"DITTO adapter {tmp_path} (loads with the model)"
    assert TransformersBackend().describe() == "no DITTO adapter configured"


def test_wiring_picks_the_scorer_a_served_model_clarifies_with(tmp_path):
    from app.config import Settings
    from app.wiring import build_backend, build_scorer

    local = Settings(_env_file=None, data_dir=tmp_path, backend="local")
    backend = build_backend(local)
    assert build_scorer(local, backend) is backend
    served = Settings(_env_file=None, data_dir=tmp_path, backend="openai", openai_model="m")
    scorer = build_scorer(served, build_backend(served))
    assert isinstance(scorer, TransformersBackend) and scorer.adapter is None  # the embedded model, unloaded
    assert not scorer.loaded


def test_writers_default_to_as_many_as_decode_together_and_settings_reach_the_backend(tmp_path):
    from pydantic import ValidationError

    from app.config import Settings
    from app.wiring import build_backend

    def settings(**kw) -> Settings:
        return Settings(_env_file=None, data_dir=tmp_path, **kw)

    assert settings().model_writers == 8 and settings(max_batch=3).model_writers == 3
    assert settings(batching=False).model_writers == 1  # one at a time: more would only interleave calls
    assert settings(backend="openai", openai_model="m").model_writers == 1
    assert settings(writers=5, batching=False).model_writers == 5
    backend = build_backend(settings(weights="int8", max_batch=3))
    assert (backend.weights, backend.max_batch, backend.batching) == ("int8", 3, True)
    assert build_backend(settings()).weights == "float32"
    with pytest.raises(ValidationError, match="weights"):
        settings(weights="int4")


def test_the_weight_format_is_decided_by_the_device():
    from generation.weights import decoding_format

    assert decoding_format("int8", "cpu") == "int8"  # torch's int8 product runs on this machine's CPU
    assert decoding_format("float32", "cpu") == "float32"
    assert decoding_format("int8", "cuda") == "float32"  # a GPU decodes as loaded, in bfloat16
    with pytest.raises(ValueError, match="weights must be one of"):
        decoding_format("int4", "cpu")


@pytest.mark.model
def test_render_uses_the_chat_template_and_the_reply_prefix(backend):
    prompt = backend.render(ask("Hello there", reply_prefix="Next,"))
    assert "<|im_start|>user\nHello there<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\nNext,")
    assert backend.count_tokens("Hello there") == 2


@pytest.mark.model
def test_streams_in_chunks_and_is_reproducible_with_a_seed(backend):
    request = ask("Describe a lighthouse in two sentences.", max_new_tokens=40, seed=7, temperature=0.8)
    chunks = list(backend.generate(request))
    assert len(chunks) > 5
    assert 20 <= backend.count_tokens("".join(chunks)) <= 41
    assert "".join(backend.generate(request)) == "".join(chunks)


@pytest.mark.model
def test_min_new_tokens_holds_off_the_end(backend):
    text = "".join(backend.generate(ask("Say yes.", max_new_tokens=60, min_new_tokens=50, temperature=0)))
    assert backend.count_tokens(text) >= 45


class CountSteps:
    """A logits processor that only counts decoding steps."""

    def __init__(self):
        self.steps = 0

    def __call__(self, input_ids, scores):
        self.steps += 1
        return scores


@pytest.mark.model
def test_closing_the_stream_stops_generation(backend):
    from transformers import LogitsProcessorList

    counter = CountSteps()
    request = ask("Write a long story about the sea.", max_new_tokens=400, min_new_tokens=400,
                  extra={"logits_processor": LogitsProcessorList([counter])})
    with closing(backend.generate(request)) as chunks:
        for i, _ in enumerate(chunks):
            if i == 3:
                break
    assert 3 <= counter.steps < 40  # stopped within a few tokens of closing, not after 400
    assert "".join(backend.generate(ask("Hi", max_new_tokens=5)))  # the model is free again


@pytest.mark.model
def test_a_constrained_choice_is_always_one_of_the_options(backend):
    from generation import prompts

    plans = ["Mara rows to the reef.", "A storm breaks the lamp.", "Tomas arrives with news."]
    request = prompts.choose("Mara found a letter from the future.", "She read it twice.", plans)
    answers = {"".join(backend.generate(request)) for _ in range(3)}
    assert answers <= {"1", "2", "3"} and len(answers) == 1  # greedy: the same answer every time


@pytest.mark.model
def test_a_reply_never_starts_with_an_avoided_word(backend):
    # Asked to repeat a sentence that starts with "We", greedy decoding starts with "We" unless told not to.
    text = "Repeat exactly: We walked to the harbour at dawn."
    plain = "".join(backend.generate(ask(text, temperature=0, max_new_tokens=8)))
    assert plain.split()[0].strip(",.:").lower() == "we"
    for temperature in (0, 1.2):
        avoided = "".join(backend.generate(ask(text, temperature=temperature, max_new_tokens=8,
                                               avoid_start=("we", "I", "you"), seed=1)))
        assert avoided.split()[0].strip(",.:'").lower() not in {"we", "i", "you"}, avoided


def test_model_calls_take_turns_in_the_order_they_came():
    import threading
    import time

    from generation.engine import Turns

    turns, order, holding = Turns(), [], threading.Event()

    def first():
        with turns:
            holding.set()
            time.sleep(0.3)  # the others line up meanwhile
            order.append(0)

    def later(n):
        with turns:
            order.append(n)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    holding.wait()
    for n in range(1, 9):
        thread = threading.Thread(target=later, args=(n,))
        thread.start()
        threads.append(thread)
        for _ in range(200):  # until it waits in line (the n-th waiter), so the order is known
            if turns.waiting == n:
                break
            time.sleep(0.005)
    for thread in threads:
        thread.join(timeout=10)
    assert order == list(range(9))
