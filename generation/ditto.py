"""DITTO (Xu et al., NeurIPS 2022, "Learning to Break the Loop"): teach a model that a sentence
it has already written should become less likely, not more, each time it comes back.

- Pseudo-repetitive data: a sentence of the corpus, after the sentence before it as a prefix,
  repeated up to the training length.
- The loss, on every token of repetitions 2..N: -log(1 - |p_n - lam * sg(p_{n-1})|), p_n being
  the model's probability of the token in repetition n and sg(p_{n-1}) the same token's
  probability one repetition earlier, detached. No loss on the prefix and the first copy.
- Training mixes it with ordinary language modelling: each batch is a DITTO batch with
  probability `mix`, otherwise an MLE batch of plain text from the same corpus.

The adapter it writes is attached by `generation.adapters`; `generation.evaluation` measures it."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import InvalidInput, StoryloomError
from generation.adapters import META, model_fingerprint
from generation.backend import check_lambda
from generation.corpus import MIN_SENTENCES, Corpus, encode_sentence
from generation.local import load_model, pick_device, resolve_model
from generation.metrics import token_logprobs
from generation.training import mean, new_run, optimizer_for, with_lora

LAMBDA = 0.5


# --- data -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Repeated:
    """One pseudo-repetitive sample: `ids` is prefix + sentence + sentence + ... (cut to length);
    the first copy starts at `start` and each copy is `period` tokens long."""

    ids: list[int]
    start: int
    period: int


def repeat_sample(prefix_ids: Sequence[int], sentence_ids: Sequence[int], length: int) -> Repeated | None:
    """None when not even two copies fit after the prefix."""
    period = len(sentence_ids)
    if period == 0 or len(prefix_ids) + 2 * period > length:
        return None
    ids = list(prefix_ids)
    while len(ids) < length:
        ids += sentence_ids
    return Repeated(ids[:length], len(prefix_ids), period)


# --- losses -----------------------------------------------------------------------------------

def ditto_loss(logits, ids, starts: Sequence[int], periods: Sequence[int], lam: float = LAMBDA):
    """Mean of -log(1 - |p_n - lam * sg(p_{n-1})|) over the tokens of repetitions 2..N."""
    import torch

    p = token_logprobs(logits, ids).exp()  # p[:, t - 1] is the probability of ids[:, t]
    losses = []
    for row, (start, period) in enumerate(zip(starts, periods)):
        now = p[row, start + period - 1:]  # tokens start+period .. T-1: repetitions 2..N
        before = p[row, start - 1:start - 1 + len(now)].detach()  # the same tokens one copy earlier
        gap = (now - lam * before).abs()
        losses.append(-torch.log((1 - gap).clamp(min=1e-5)))
    return torch.cat(losses).mean()


def mle_loss(logits, ids):
    return -token_logprobs(logits, ids).mean()


def kl_loss(logits, base_logits):
    """KL(base || model) per token, averaged: keeps the model's next-token distribution on ordinary
    text where the base model had it, without teaching it the text itself (names, paragraphing)."""
    import torch

    base = torch.log_softmax(base_logits.float(), dim=-1)
    return (base.exp() * (base - torch.log_softmax(logits.float(), dim=-1))).sum(-1).mean()


# --- training ---------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    steps: int = 300
    lr: float = 1e-3
    batch: int = 8
    length: int = 128  # tokens per training sequence
    lam: float = LAMBDA
    mix: float = 0.5  # the share of DITTO batches; the rest are ordinary text
    # on ordinary text: "mle" learns the text (the paper's way); "kl" keeps the base model's
    # distribution (LoRA only: the base is the model with the adapter switched off)
    anchor: str = "kl"
    lora: bool = True
    lora_rank: int = 8
    holdout: float = 0.25
    seed: int = 0

    def check(self) -> None:
        check_lambda(self.lam)
        if self.steps < 1 or self.batch < 1 or self.length < 32:
            raise InvalidInput("steps and batch must be at least 1 and length at least 32")
        if not 0 < self.lr < 1:
            raise InvalidInput(f"the learning rate must be in (0, 1), got {self.lr}")
        if not 0 <= self.mix <= 1:
            raise InvalidInput(f"mix must be in [0, 1], got {self.mix}")
        if self.anchor not in ("mle", "kl"):
            raise InvalidInput(f"anchor must be mle or kl, got {self.anchor!r}")
        if self.anchor == "kl" and not self.lora:
            raise InvalidInput("--anchor kl needs --lora (the base model is the one with the adapter off); "
                               "use --anchor mle for full fine-tuning")


class Batches:
    """Random DITTO and MLE batches from one corpus, reproducible from a seed."""

    def __init__(self, tokenizer, corpus: Corpus, config: TrainConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.samples = []
        for prev, sentence in corpus.pairs:
            sample = repeat_sample(encode_sentence(tokenizer, prev)[-config.length // 4:],
                                   encode_sentence(tokenizer, sentence), config.length)
            if sample:
                self.samples.append(sample)
        if len({tuple(s.ids[s.start:s.start + s.period]) for s in self.samples}) < MIN_SENTENCES:
            raise InvalidInput(f"fewer than {MIN_SENTENCES} distinct sentences fit twice in {config.length} "
                               "tokens; use a longer --length or a corpus with shorter sentences")
        self.text_ids = tokenizer("\n\n".join(corpus.train), add_special_tokens=False)["input_ids"]
        if len(self.text_ids) < config.length * 4:
            raise InvalidInput(f"the corpus's training part has {len(self.text_ids)} tokens; "
                               f"need at least {config.length * 4} for language-modelling batches")

    def next(self):
        """("ditto", ids, starts, periods) or ("mle", ids, None, None); ids a [B, length] tensor."""
        import torch

        c = self.config
        if self.rng.random() < c.mix:
            picked = [self.samples[self.rng.randrange(len(self.samples))] for _ in range(c.batch)]
            return ("ditto", torch.tensor([s.ids for s in picked]),
                    [s.start for s in picked], [s.period for s in picked])
        offsets = [self.rng.randrange(len(self.text_ids) - c.length) for _ in range(c.batch)]
        return "mle", torch.tensor([self.text_ids[o:o + c.length] for o in offsets]), None, None


Progress = Callable[[int, int, dict], None]  # (step, steps, {"loss": ..., "kind": ...})


def train(model_spec: str | None, corpus_paths: Sequence[str | Path], out: str | Path, config: TrainConfig,
          device: str = "auto", progress: Progress | None = None, command: str = "") -> dict:
    """Fine-tune with DITTO + MLE on the training parts of one or more corpora and save to `out`: a
    LoRA adapter (config.lora) or a whole model folder. Returns the metadata written to
    out/storyloom-ditto.json."""
    import torch
    from accelerate import Accelerator

    config.check()
    out, corpora = new_run(out, corpus_paths, config.holdout)
    corpus = Corpus(" + ".join(c.path for c in corpora), ",".join(c.sha256 for c in corpora),
                    [p for c in corpora for p in c.train], [p for c in corpora for p in c.held_out])
    source = resolve_model(model_spec)
    model, tokenizer = load_model(source, "cpu")  # accelerate places it
    batches = Batches(tokenizer, corpus, config)
    torch.manual_seed(config.seed)
    cuda = pick_device(device) == "cuda"
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")
    if config.lora:
        model = with_lora(model, config.lora_rank)
    started = time.perf_counter()
    model, history = _fit(model, batches, config, accelerator, progress)
    seconds = time.perf_counter() - started
    model = _save(model, tokenizer, out, config.lora)
    meta = {
        "kind": "lora" if config.lora else "full",
        "base_model": str(source) if model_spec else "embedded",
        "base_fingerprint": model_fingerprint(model),
        "corpora": [{"path": c.path, "sha256": c.sha256, "train_paragraphs": len(c.train),
                     "held_out_paragraphs": len(c.held_out)} for c in corpora],
        "ditto_samples": len(batches.samples), "config": asdict(config),
        "device": str(accelerator.device), "seconds": round(seconds, 1),
        "loss": {k: {"first_10": mean(v[:10]), "last_10": mean(v[-10:]), "batches": len(v)}
                 for k, v in history.items()},
        "command": command,
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _fit(model, batches: Batches, config: TrainConfig, accelerator, progress: Progress | None):
    """The training loop. Returns the trained model (unwrapped, in eval mode) and each batch's loss
    by kind ("ditto" and the anchor)."""
    import torch

    model.train()
    trainable, optimizer, scheduler = optimizer_for(model, config.lr, config.steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    history = {"ditto": [], config.anchor: []}
    for step in range(1, config.steps + 1):
        kind, ids, starts, periods = batches.next()
        ids = ids.to(accelerator.device)
        loss = _batch_loss(model, accelerator, config, kind, ids, starts, periods)
        if not torch.isfinite(loss):
            raise StoryloomError(f"the loss became {loss.item()} at step {step}; try a lower --lr")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        label = kind if kind == "ditto" else config.anchor
        history[label].append(round(loss.item(), 4))
        if progress:
            progress(step, config.steps, {"kind": label, "loss": loss.item()})
    model = accelerator.unwrap_model(model)
    model.eval()
    return model, history


def _batch_loss(model, accelerator, config: TrainConfig, kind: str, ids, starts, periods):
    """DITTO's loss on a DITTO batch; on ordinary text, the anchor's: KL to the base model (the
    adapter switched off) or plain language modelling."""
    import torch

    logits = model(input_ids=ids).logits
    if kind == "ditto":
        return ditto_loss(logits, ids, starts, periods, config.lam)
    if config.anchor == "kl":
        with torch.no_grad(), accelerator.unwrap_model(model).disable_adapter():
            base_logits = model(input_ids=ids).logits
        return kl_loss(logits, base_logits)
    return mle_loss(logits, ids)


def _save(model, tokenizer, out: Path, lora: bool):
    """Writes the adapter (its weights halved to float16) or the whole model; returns what was saved."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    if lora:
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.data = p.data.to(torch.float16)  # half the size on disk; upcast again on load
    else:  # a model read from GGUF refuses save_pretrained: copy its (dequantized) weights into a plain one
        from transformers import AutoModelForCausalLM

        plain = AutoModelForCausalLM.from_config(model.config)
        plain.load_state_dict(model.state_dict())
        model = plain
        tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return model
