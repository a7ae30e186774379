"""Tuning a model to read prompts with [PAUSE] tokens (`generation.pause`): LoRA on story passages
with pauses injected. The passage (pauses in it) is the prompt, its next sentence the target, the
loss on the target only; the pause embedding itself is trained (peft's trainable tokens). It
reports the held-out loss of the target with pauses before and after tuning, and without pauses
before and after."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import InvalidInput, StoryloomError
from generation.adapters import model_fingerprint
from generation.corpus import split_sentences
from generation.pause import META, PAUSE, PauseSettings, add_pause_token, insert_pauses
from generation.training import mean, new_run, optimizer_for, with_lora

ASK = "Continue this passage with its next sentence.\n\n"


@dataclass(frozen=True)
class TuneConfig:
    steps: int = 200
    lr: float = 1e-3
    batch: int = 8
    rank: int = 8
    pauses: PauseSettings = PauseSettings()
    prompt_words: int = 60  # about this many words of passage before the target sentence
    holdout: float = 0.25
    eval_samples: int = 64
    seed: int = 0

    def check(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.rank < 1:
            raise InvalidInput("steps, batch and rank must be at least 1")
        if not 0 < self.lr < 1:
            raise InvalidInput(f"the learning rate must be in (0, 1), got {self.lr}")
        if self.prompt_words < self.pauses.min_words:
            raise InvalidInput(f"passages of {self.prompt_words} words would get no pauses "
                               f"(threshold {self.pauses.min_words})")


def passages(paragraphs: Sequence[str], prompt_words: int) -> list[tuple[str, str]]:
    """(passage, next sentence): consecutive sentences of one paragraph, at least `prompt_words`
    words, then the sentence after them (5 to 50 words)."""
    out = []
    for paragraph in paragraphs:
        sentences = split_sentences(paragraph)
        for end in range(1, len(sentences)):
            target = sentences[end]
            if not 5 <= len(target.split()) <= 50:
                continue
            start = end
            while start > 0 and sum(len(s.split()) for s in sentences[start:end]) < prompt_words:
                start -= 1
            passage = " ".join(sentences[start:end])
            if len(passage.split()) >= prompt_words:
                out.append((passage, target))
    return out


def _encode(tokenizer, passage: str, target: str, pauses: PauseSettings | None):
    """(input ids, labels) of one chat example; labels -100 except on the target and its end."""
    prompt_text = insert_pauses(passage, pauses) if pauses else passage
    messages = [{"role": "user", "content": ASK + prompt_text}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def _batch(encoded: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in encoded)
    ids = torch.tensor([i + [pad_id] * (width - len(i)) for i, _ in encoded])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in encoded])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in encoded])
    return ids, labels, mask


def _loss(model, ids, labels, mask):
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def held_out_loss(model, tokenizer, pairs: Sequence[tuple[str, str]], pauses: PauseSettings | None,
                  batch: int = 8) -> float:
    """Mean cross-entropy per target token over `pairs` (lower is better)."""
    import torch

    pad = tokenizer.pad_token_id or tokenizer.eos_token_id
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(pairs), batch):
            encoded = [_encode(tokenizer, p, t, pauses) for p, t in pairs[i:i + batch]]
            ids, labels, mask = _batch(encoded, pad)
            n = int((labels[:, 1:] != -100).sum())
            total += _loss(model, ids.to(model.device), labels.to(model.device), mask.to(model.device)).item() * n
            count += n
    return total / max(count, 1)


def split(corpora, config: TuneConfig) -> tuple[random.Random, list[tuple[str, str]], list[tuple[str, str]]]:
    """The seeded random source, the training passages, and the held-out sample evaluated."""
    train_pairs = passages([p for c in corpora for p in c.train], config.prompt_words)
    held = passages([p for c in corpora for p in c.held_out], config.prompt_words)
    if len(train_pairs) < config.batch or not held:
        raise InvalidInput(f"the corpus gives {len(train_pairs)} training and {len(held)} held-out passages of "
                           f"{config.prompt_words}+ words followed by a sentence; give a longer corpus")
    rng = random.Random(config.seed)
    return rng, train_pairs, rng.sample(held, min(config.eval_samples, len(held)))


Progress = Callable[[int, int, float], None]  # (step, steps, loss)


def tune(model, tokenizer, corpus_paths: Sequence[str | Path], out: str | Path, config: TuneConfig = TuneConfig(),
         progress: Progress | None = None, command: str = "", trained_on: str = "",
         stage: Callable[[str], None] | None = None) -> dict:
    """LoRA-tune `model` (modified in place: the pause token is added) to read prompts with pauses;
    saves the adapter and its metadata to `out` and returns the metadata."""
    import torch

    config.check()
    out, corpora = new_run(out, corpus_paths, config.holdout)
    rng, train_pairs, held = split(corpora, config)
    torch.manual_seed(config.seed)
    stage = stage or (lambda what: None)
    model.eval()
    stage(f"held-out loss of {len(held)} passages before tuning, without and with pauses ...")
    plain_before = held_out_loss(model, tokenizer, held, None, config.batch)
    pid = add_pause_token(model, tokenizer)
    paused_before = held_out_loss(model, tokenizer, held, config.pauses, config.batch)
    model.requires_grad_(True)
    model = with_lora(model, config.rank, trainable_token_indices=[pid])
    started = time.perf_counter()
    losses = _fit(model, tokenizer, rng, train_pairs, config, progress)
    seconds = time.perf_counter() - started
    model.eval()
    stage("held-out loss after tuning, with and without pauses ...")
    paused_after = held_out_loss(model, tokenizer, held, config.pauses, config.batch)
    plain_after = held_out_loss(model, tokenizer, held, None, config.batch)  # what the tuning did without pauses
    _save(model, out)
    meta = {
        "token": PAUSE, "token_id": pid, "pauses": asdict(config.pauses), "config": asdict(config),
        "base_fingerprint": model_fingerprint(model.get_base_model()), "trained_on": trained_on,
        "corpora": [{"path": c.path, "sha256": c.sha256} for c in corpora],
        "train_passages": len(train_pairs), "held_out_passages": len(held), "seconds": round(seconds, 1),
        "held_out_loss": {"no_pauses_before": round(plain_before, 4), "pauses_before": round(paused_before, 4),
                          "pauses_after": round(paused_after, 4), "no_pauses_after": round(plain_after, 4)},
        "train_loss": {"first_10": mean(losses[:10]), "last_10": mean(losses[-10:])},
        "command": command,
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _fit(model, tokenizer, rng: random.Random, train_pairs: list[tuple[str, str]], config: TuneConfig,
         progress: Progress | None) -> list[float]:
    """The tuning loop over random batches of the training passages; each batch's loss."""
    import torch

    model.train()
    trainable, optimizer, scheduler = optimizer_for(model, config.lr, config.steps)
    pad = tokenizer.pad_token_id or tokenizer.eos_token_id
    losses = []
    for step in range(1, config.steps + 1):
        picked = [train_pairs[rng.randrange(len(train_pairs))] for _ in range(config.batch)]
        ids, labels, mask = _batch([_encode(tokenizer, p, t, config.pauses) for p, t in picked], pad)
        loss = _loss(model, ids.to(model.device), labels.to(model.device), mask.to(model.device))
        if not torch.isfinite(loss):
            raise StoryloomError(f"the loss became {loss.item()} at step {step}; try a lower --lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(round(loss.item(), 4))
        if progress:
            progress(step, config.steps, loss.item())
    return losses


def _save(model, out: Path) -> None:
    """Writes the adapter, its tuned weights halved to float16 (upcast again on load)."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.float16)  # half the size on disk; upcast again on load
    model.save_pretrained(out)
