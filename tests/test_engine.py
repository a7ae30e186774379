"""The batched decoding engine (generation/engine.py) on the embedded model: rows decoded together
give what they give alone (greedy token for token, and a seeded sample too), rows join mid-flight
and leave when done or closed, each row's processors see its own tokens, a request for the other
weights waits for the batch to drain, and a failure reaches every reader of the batch."""

from __future__ import annotations

import threading

import pytest
import torch

from generation.engine import NUCLEUS, Engine, Job

pytestmark = pytest.mark.model

ASKS = ["Write a sentence about the sea.", "Name a colour.",
        "Write the opening of a story about a lighthouse keeper who finds a letter from the future, in three "
        "sentences, with the weather, the island and the letter's first words."]


@pytest.fixture(scope="module")
def loaded(model_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_folder)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": a}], tokenize=False, add_generation_prompt=True)
             for a in ASKS]
    prompts = [tokenizer(chat, add_special_tokens=False)["input_ids"] for chat in chats]
    return model, tokenizer, prompts


def together(engine: Engine, jobs: list[Job]) -> list[list[int]]:
    """The jobs submitted from threads of their own at once; each one's tokens."""
    out: list = [None] * len(jobs)

    def read(n: int) -> None:
        out[n] = list(engine.submit(jobs[n]))

    threads = [threading.Thread(target=read, args=(n,)) for n in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return out


def test_greedy_rows_in_a_batch_give_what_they_give_alone_and_what_generate_gives(loaded):
    model, tokenizer, prompts = loaded
    stop = frozenset({tokenizer.eos_token_id})
    engine = Engine(model)
    alone = [list(engine.submit(Job(p, 40, stop_ids=stop))) for p in prompts]
    with torch.inference_mode():
        generated = [model.generate(torch.tensor([p]), max_new_tokens=40, do_sample=False,
                                    pad_token_id=tokenizer.eos_token_id)[0, len(p):].tolist() for p in prompts]
    assert alone == generated
    assert together(engine, [Job(p, 40, stop_ids=stop) for p in prompts]) == alone
    assert len({len(a) for a in alone}) > 1  # rows of different lengths left the batch at different steps


def test_a_row_joins_mid_flight_and_a_closed_row_stops_alone(loaded):
    model, tokenizer, prompts = loaded
    engine = Engine(model)
    alone = [list(engine.submit(Job(p, 30))) for p in prompts]
    first = engine.submit(Job(prompts[2], 30))
    second = engine.submit(Job(prompts[0], 30))
    head = [next(first) for _ in range(10)]  # the batch is decoding...
    late = engine.submit(Job(prompts[1], 30))  # ...when a third request comes
    assert head + list(first) == alone[2]
    assert list(late) == alone[1]
    taken = [next(second) for _ in range(3)]
    second.close()  # its reader stops: its row leaves, nothing else changes
    assert taken == alone[0][:3]
    assert list(engine.submit(Job(prompts[0], 30))) == alone[0]
    assert engine.load == (0, 0)


def test_int8_rows_write_what_they_write_alone_however_they_join(loaded):
    """int8 activations turn the last bits of a float into another integer, so they amplify any
    difference a batch makes: rows that join at other steps, beside prompts of other lengths,
    still write what generate writes for them alone when they attend by rows (the backend's
    setting for int8). The engine is stepped by hand here, so the join points are fixed and the
    test means the same every run."""
    from generation.weights import converted

    model, tokenizer, prompts = loaded
    int8, stop = converted(model, tokenizer), frozenset({tokenizer.eos_token_id})
    with torch.inference_mode():
        alone = [int8.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False,
                               pad_token_id=tokenizer.eos_token_id)[0, len(p):].tolist() for p in prompts]
    for schedule in ([(2, 0), (0, 3), (1, 7)], [(1, 0), (0, 0), (2, 0), (2, 9)], [(0, 0), (2, 5), (1, 5), (0, 11)]):
        engine, jobs = Engine(int8, by_rows=True), [(Job(prompts[p], 24, stop_ids=stop), at) for p, at in schedule]
        with torch.inference_mode():
            for step in range(60):
                engine._pending.extend(job for job, at in jobs if at == step)
                engine._admit()
                if engine._rows:
                    engine._step()
        assert [job.tokens for job, _ in jobs] == [alone[p] for p, _ in schedule], schedule


def test_a_seeded_sample_is_the_same_in_a_batch(loaded):
    model, _, prompts = loaded
    engine = Engine(model)
    job = lambda seed: Job(prompts[2], 30, temperature=0.8, top_p=0.95, seed=seed)  # noqa: E731
    alone = [list(engine.submit(job(seed))) for seed in (1, 2)]
    assert alone[0] != alone[1]
    assert together(engine, [job(1), job(2), Job(prompts[0], 30)])[:2] == alone


def test_each_rows_processors_see_that_rows_tokens_only(loaded):
    model, _, prompts = loaded
    seen: dict[int, list[int]] = {}

    class Watch:
        def __init__(self, row):
            self.row = row

        def __call__(self, input_ids, scores):
            seen[self.row] = input_ids[0].tolist()
            if self.row == 1:  # this row may never write its first choice
                scores = scores.clone()
                scores[0, scores.argmax()] = float("-inf")
            return scores

    engine = Engine(model)
    plain = list(engine.submit(Job(prompts[1], 5)))
    rows = together(engine, [Job(prompts[0], 5, processors=[Watch(0)]), Job(prompts[1], 5, processors=[Watch(1)])])
    assert seen[0] == prompts[0] + rows[0][:-1] and seen[1] == prompts[1] + rows[1][:-1]  # no padding
    assert rows[1][0] != plain[0]


def test_rows_that_share_a_prompt_choose_from_scores_of_their_own(loaded):
    """One reading of a shared prompt gives every row its first scores; a row that bans its
    likeliest first token must not ban it for the others."""
    model, _, prompts = loaded
    first = list(Engine(model).submit(Job(prompts[0], 1)))[0]
    engine, jobs = Engine(model), [Job(prompts[0], 1, suppress_ids=(first,)), Job(prompts[0], 1)]
    engine._pending.extend(jobs)  # stepped by hand: no loop thread
    with torch.inference_mode():
        engine._admit()  # both join in one admission: one reading for the two
    assert jobs[0].tokens != [first] and jobs[1].tokens == [first]


def test_a_request_for_the_other_weights_waits_for_the_batch_to_drain(loaded):
    model, _, prompts = loaded
    switches: list[bool] = []
    forwards: list[tuple[bool, list[Job]]] = []  # each forward: the weights in the model, the batch's rows
    engine = Engine(model, weights=lambda plain: switches.append(plain) or model)
    hook = model.register_forward_pre_hook(lambda *_: forwards.append((engine._applied, list(engine._rows))))
    try:
        running = engine.submit(Job(prompts[2], 20))
        next(running)
        base = engine.submit(Job(prompts[0], 5, plain=True))
        after = engine.submit(Job(prompts[1], 5))  # came after the plain one: does not pass it
        assert len(list(running)) == 19 and len(list(base)) == 5 and len(list(after)) == 5
    finally:
        hook.remove()
    assert switches == [True, False]  # the weights changed twice, not at every step
    modes = [plain for plain, _ in forwards]
    first, last = modes.index(True), len(modes) - 1 - modes[::-1].index(True)
    assert all(modes[first:last + 1]) and not any(modes[:first]) and not any(modes[last + 1:])
    assert len(modes) - last - 1 >= 5  # the later request ran after the plain one, not beside the first
    assert all(job.plain == plain for plain, rows in forwards for job in rows)  # never mixed in a batch


class Forwards:
    """Each forward of `model` while in use: (rows, tokens read per row, cached tokens of all rows,
    threads, thread name, start, end)."""

    def __init__(self, model):
        import time

        self.seen: list[list] = []
        self._started: dict[int, list] = {}

        def before(_, args, kwargs):
            ids = kwargs["input_ids"]
            self._started[threading.get_ident()] = [*ids.shape, kwargs["attention_mask"].numel(),
                                                    torch.get_num_threads(), threading.current_thread().name,
                                                    time.perf_counter()]

        def after(*_):
            self.seen.append([*self._started.pop(threading.get_ident()), time.perf_counter()])

        self._hooks = [model.register_forward_pre_hook(before, with_kwargs=True), model.register_forward_hook(after)]

    def __enter__(self) -> "Forwards":
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()


def test_on_a_cpu_prompts_read_on_every_thread_steps_on_one_and_the_caller_keeps_its_own(loaded):
    model, _, prompts = loaded
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    wide = 2 * len(prompts[2]) + 8  # two rows of this prompt make a wide step after a few tokens; one never does
    try:
        with Forwards(model) as forwards:
            engine = Engine(model, wide_steps=wide)
            assert len(list(engine.submit(Job(prompts[2], 6)))) == 6
            assert [len(t) for t in together(engine, [Job(prompts[2], 12), Job(prompts[2], 12)])] == [12, 12]
            assert torch.get_num_threads() == 2  # this thread's setting is its own
    finally:
        torch.set_num_threads(before)
    seen = forwards.seen
    assert seen[0][:2] == [1, len(prompts[2])] and seen[0][3] == 2  # the prompt's reading
    assert [threads for *_, threads, _, _, _ in seen[1:6]] == [1] * 5  # one row's steps
    readings = [(f[5], f[6]) for f in seen[6:] if f[1] > 1 and f[4].startswith("storyloom-reader")]
    steps = [(cached, threads) for rows, read, cached, threads, _, started, _ in seen[6:]
             if read == 1 and not any(a < started < b for a, b in readings)]  # (steps beside a reading: below)
    assert all(threads == (2 if cached >= wide else 1) for cached, threads in steps)
    assert {threads for _, threads in steps} == {1, 2}


def test_a_prompt_that_comes_while_rows_decode_is_read_beside_them_on_a_thread_of_its_own(loaded):
    model, _, prompts = loaded
    engine = Engine(model, wide_steps=1)  # every step would be wide, but for the reading beside it
    alone = list(engine.submit(Job(prompts[1], 20)))
    with Forwards(model) as forwards:
        first = engine.submit(Job(prompts[2], 60))
        head = [next(first) for _ in range(3)]  # the batch is decoding...
        late = list(engine.submit(Job(prompts[1], 20)))  # ...when another prompt comes
        rest = list(first)
    assert late == alone and len(head + rest) == 60
    reading = [f for f in forwards.seen if f[1] == len(prompts[1])]
    assert len(reading) == 1
    _, _, _, threads, name, started, ended = reading[0]
    assert threads == 1 and name.startswith("storyloom-reader")
    beside = [f for f in forwards.seen if f[1] == 1 and started < f[5] < ended]
    assert beside and all(f[3] == 1 and f[4] == "storyloom-engine" for f in beside)  # steps went on, narrow


def test_a_prompt_that_cannot_be_read_fails_its_reader_at_once(loaded):
    model, _, prompts = loaded
    engine = Engine(model)
    with pytest.raises(Exception) as failed:  # noqa: B017 (whatever the model raises for an empty prompt)
        list(engine.submit(Job([], 5), timeout=60))
    assert not isinstance(failed.value, TimeoutError)  # the error itself, not a reader left waiting
    assert len(list(engine.submit(Job(prompts[1], 5)))) == 5


def test_closing_ends_the_loop_and_later_requests_are_refused(loaded):
    model, _, prompts = loaded
    engine = Engine(model)
    assert len(list(engine.submit(Job(prompts[1], 3)))) == 3
    thread = engine._thread
    engine.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(Job(prompts[1], 3))


def test_a_process_that_decoded_exits_cleanly(model_folder):
    """The engine's thread is closed at exit: left alive in torch (two threads), the interpreter's
    finalization aborted 2 runs in 3 with status 134 after the work was done (with the DITTO adapter)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = ("import sys\nfrom generation.adapters import DEFAULT_ADAPTER\nfrom generation.backend import Request\n"
              "from generation.local import TransformersBackend\n"
              "b = TransformersBackend(sys.argv[1], adapter=DEFAULT_ADAPTER)\n"
              "r = Request(messages=[{'role': 'user', 'content': 'Hi'}], max_new_tokens=5, temperature=0)\n"
              "print(repr(''.join(b.generate(r))))\n")
    done = subprocess.run([sys.executable, "-c", script, str(model_folder)], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() not in ("", "''")


def test_a_failure_reaches_every_reader_and_the_engine_goes_on(loaded):
    model, _, prompts = loaded

    def broken(input_ids, scores):
        raise RuntimeError("a processor broke")

    engine = Engine(model)
    with pytest.raises(RuntimeError, match="a processor broke"):
        list(engine.submit(Job(prompts[0], 5, processors=[broken])))
    assert len(list(engine.submit(Job(prompts[1], 5)))) == 5


@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_the_backend_writes_through_the_engine_what_generate_writes_with_ditto_on_and_off(model_folder, weights):
    """The local backend with the DITTO adapter, batched and not, in each weight format: the same
    greedy text for a story with DITTO on and one with it off (float32: the engine takes the
    adapter's update out of the weights for that row's batch and puts it back; int8 decodes from
    copies with and without it), alone and when both are asked at once, rows joining mid-flight
    (left-padded). The float32 model stays as loaded for gradient work."""
    from generation.adapters import DEFAULT_ADAPTER
    from generation.backend import Decoding, Request
    from generation.local import TransformersBackend

    def ask(ditto: bool) -> Request:
        return Request(messages=[{"role": "user", "content": "Write about a storm over the harbour."}],
                       max_new_tokens=30, temperature=0, decoding=Decoding(ditto=ditto))

    batched = TransformersBackend(str(model_folder), adapter=DEFAULT_ADAPTER, batching=False, weights=weights)
    assert batched.has_adapter and batched.weights == weights
    before = {ditto: "".join(batched.generate(ask(ditto))) for ditto in (True, False)}  # through generate
    assert before[True] != before[False]  # the adapter changes the text: the test can tell them apart
    batched.batching = True  # the same weights, through the engine from here on
    assert {ditto: "".join(batched.generate(ask(ditto))) for ditto in (True, False)} == before
    out: dict[int, str] = {}
    threads = [threading.Thread(target=lambda n=n, d=d: out.__setitem__(n, "".join(batched.generate(ask(d)))))
               for n, d in enumerate((True, False, True, True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert out == {0: before[True], 1: before[False], 2: before[True], 3: before[True]}
    assert "".join(batched.generate(ask(True))) == before[True]  # the adapter is back in after
    model, _ = batched.load()
    assert model.lm_head.weight.dtype == torch.float32
    if weights != "float32":
        copy = batched._decoder(False)
        assert copy is not batched._decoder(True) and copy is not model
        assert type(copy.model.layers[0].mlp.down_proj).__name__ == "Int8Linear"


@pytest.mark.parametrize("likeliest", [3, 400])  # the nucleus among the first few hundred, or beyond them
def test_top_p_samples_only_the_smallest_set_of_tokens_that_reaches_it(likeliest):
    vocab = 1000
    scores = torch.full((1, vocab), -30.0)
    scores[0, 500:500 + likeliest] = torch.linspace(2.0, 1.0, likeliest)  # a nucleus at the vocabulary's middle
    probs = torch.softmax(scores, -1)[0]
    kept = int((probs.sort(descending=True).values.cumsum(0) < 0.9).sum()) + 1  # the smallest set reaching 0.9
    job = Job([0], 1, temperature=1.0, top_p=0.9, generator=torch.Generator().manual_seed(0))
    drawn = {Engine._choose(job, scores.clone()) for _ in range(3000)}
    allowed = set(probs.sort(descending=True).indices[:kept].tolist())
    assert drawn <= allowed and len(drawn) >= 0.9 * kept
    assert kept == 3 if likeliest == 3 else NUCLEUS < kept < likeliest  # the second looks past the first few hundred


def test_top_k_keeps_the_likeliest_and_top_p_then_reads_their_renormalised_share():
    scores = torch.log(torch.tensor([[0.30, 0.25, 0.20, 0.15, 0.10]]))

    def drawn(top_k: int, top_p: float) -> set[int]:
        job = Job([0], 1, temperature=1.0, top_p=top_p, top_k=top_k, generator=torch.Generator().manual_seed(0))
        return {Engine._choose(job, scores.clone()) for _ in range(2000)}

    assert drawn(0, 1.0) == {0, 1, 2, 3, 4}
    assert drawn(3, 1.0) == {0, 1, 2}
    # of the three kept, 0.30/0.75 = 0.4 and 0.25/0.75 = 0.33 reach 0.7 together, 0.55 of the whole would not
    assert drawn(3, 0.7) == {0, 1}
    assert drawn(0, 0.7) == {0, 1, 2}
