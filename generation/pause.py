"""[PAUSE] tokens (Goyal et al., 2024; used by SCA prompting, Rawte et al., 2024): a special token
with no meaning of its own, put at clause and sentence boundaries of a long prompt, which gives a
model tuned to use it extra computation before it has to answer.

- `insert_pauses` puts `per_boundary` pauses after each sentence end (and after each , ; : when
  `clauses`) of a text of at least `min_words` words.
- `add_pause_token` adds the token to a tokenizer and a model (the embeddings resized, the new row
  initialised to the mean of the others), and never lets the model write it (`suppress`).
- `tune` LoRA-tunes a model on story passages with pauses injected: the passage (pauses in it) is
  the prompt, its next sentence the target, the loss on the target only; the pause embedding
  itself is trained (peft's trainable tokens). It reports the held-out loss of the target with
  pauses before and after tuning, and without pauses before tuning.
- `attach_pauses` loads such an adapter into a model for serving (merged into the weights).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from generation.ditto import (
    LORA_TARGETS, AdapterUnavailable, model_fingerprint, new_run, split_sentences, warmup_then_decay,
)
from common.errors import InvalidInput, StoryloomError

PAUSE = "[PAUSE]"
META = "storyloom-pause.json"
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"'”’)\]]*(?=\s)|(?<=[,;:])(?=\s)")
_SENTENCE = re.compile(r"(?<=[.!?…])[\"'”’)\]]*(?=\s)")
ASK = "Continue this passage with its next sentence.\n\n"


@dataclass(frozen=True)
class PauseSettings:
    per_boundary: int = 1  # pauses at each boundary
    min_words: int = 25  # shorter texts get none
    clauses: bool = True  # also after , ; and : (else only after sentence ends)

    def __post_init__(self):
        if not 1 <= self.per_boundary <= 8:
            raise InvalidInput(f"pauses per boundary must be 1 to 8, got {self.per_boundary}")
        if self.min_words < 0:
            raise InvalidInput(f"the length threshold must be at least 0 words, got {self.min_words}")


def insert_pauses(text: str, settings: PauseSettings = PauseSettings()) -> str:
    """`text` with pauses after its boundaries (none after the very end), when it is long enough."""
    if len(text.split()) < settings.min_words:
        return text
    marks = " ".join([PAUSE] * settings.per_boundary)
    pattern = _BOUNDARY if settings.clauses else _SENTENCE
    out, last = [], 0
    for m in pattern.finditer(text):
        out += [text[last:m.end()], " ", marks]
        last = m.end()
    return "".join(out) + text[last:]


def strip_pauses(text: str) -> str:
    return " ".join(text.replace(PAUSE, " ").split())


def add_pause_token(model, tokenizer) -> int:
    """The pause token's id, added to the tokenizer and the model's embeddings when missing."""
    from transformers import AddedToken

    if PAUSE not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(PAUSE, special=True, normalized=False)])
    pause_id = tokenizer.convert_tokens_to_ids(PAUSE)
    if model.get_input_embeddings().weight.shape[0] <= pause_id:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return pause_id


# --- tuning ------------------------------------------------------------------------------------

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
    from peft import LoraConfig, get_peft_model

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
    model = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=2 * config.rank, lora_dropout=0.0,
                                             target_modules=LORA_TARGETS, trainable_token_indices=[pid],
                                             task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)
    scheduler = warmup_then_decay(optimizer, config.steps)
    pad = tokenizer.pad_token_id or tokenizer.eos_token_id
    losses = []
    started = time.perf_counter()
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
    seconds = time.perf_counter() - started
    model.eval()
    stage("held-out loss after tuning, with and without pauses ...")
    paused_after = held_out_loss(model, tokenizer, held, config.pauses, config.batch)
    plain_after = held_out_loss(model, tokenizer, held, None, config.batch)  # what the tuning did without pauses
    out.mkdir(parents=True, exist_ok=True)
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.float16)  # half the size on disk; upcast again on load
    model.save_pretrained(out)
    meta = {
        "token": PAUSE, "token_id": pid, "pauses": asdict(config.pauses), "config": asdict(config),
        "base_fingerprint": model_fingerprint(model.get_base_model()), "trained_on": trained_on,
        "corpora": [{"path": c.path, "sha256": c.sha256} for c in corpora],
        "train_passages": len(train_pairs), "held_out_passages": len(held), "seconds": round(seconds, 1),
        "held_out_loss": {"no_pauses_before": round(plain_before, 4), "pauses_before": round(paused_before, 4),
                          "pauses_after": round(paused_after, 4), "no_pauses_after": round(plain_after, 4)},
        "train_loss": {"first_10": round(sum(losses[:10]) / len(losses[:10]), 4),
                       "last_10": round(sum(losses[-10:]) / len(losses[-10:]), 4)},
        "command": command,
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    try:
        return json.loads((folder / META).read_text())
    except FileNotFoundError:
        raise AdapterUnavailable(f"no pause adapter at {folder} ({META} missing)") from None
    except (OSError, ValueError) as e:
        raise AdapterUnavailable(f"cannot read {folder / META}: {e}") from e


def attach_pauses(model, tokenizer, folder: str | Path):
    """The model with the pause token and the tuned adapter folded into its weights, and the
    adapter's pause settings; AdapterUnavailable for a missing or mismatched adapter."""
    from peft import PeftModel

    meta = read_meta(folder)
    have = model_fingerprint(model)
    want = meta.get("base_fingerprint", {})
    if {k: v for k, v in want.items() if k != "vocab_size"} != {k: v for k, v in have.items() if k != "vocab_size"}:
        raise AdapterUnavailable(f"the pause adapter at {folder} was made for another model")
    pid = add_pause_token(model, tokenizer)
    if pid != meta.get("token_id"):
        raise AdapterUnavailable(f"the pause adapter at {folder} expects {PAUSE} as token {meta.get('token_id')}, "
                                 f"this tokenizer gives {pid}")
    try:
        model = PeftModel.from_pretrained(model, str(folder), is_trainable=False).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise AdapterUnavailable(f"cannot load the pause adapter at {folder}: {str(e).splitlines()[0]}") from e
    model.requires_grad_(False)
    return model, PauseSettings(**meta["pauses"])
