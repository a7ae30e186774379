"""What DITTO training and [PAUSE] tuning share: a new output folder with the corpora of the run,
the LoRA layers a model is tuned in, and the optimiser with its learning-rate schedule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from common.errors import InvalidInput
from generation.corpus import Corpus, read_corpus

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def new_run(out: str | Path, corpus_paths: Sequence[str | Path], holdout: float) -> tuple[Path, list[Corpus]]:
    """The output folder (refused when it holds anything) and the corpora of a training run."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"{out} exists and is not empty; give a new folder")
    corpora = [read_corpus(path, holdout) for path in corpus_paths]
    if not corpora:
        raise InvalidInput("give at least one corpus")
    return out, corpora


def with_lora(model, rank: int, **options):
    """The model wrapped for LoRA tuning of its attention and MLP projections (peft); `options`
    go to peft's LoraConfig (e.g. trainable_token_indices)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                            target_modules=LORA_TARGETS, task_type="CAUSAL_LM", **options))


def optimizer_for(model, lr: float, steps: int):
    """(trainable parameters, AdamW over them without weight decay, its schedule: `warmup_then_decay`)."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    return trainable, optimizer, warmup_then_decay(optimizer, steps)


def warmup_then_decay(optimizer, steps: int):
    """Linear warm-up over the first 5% of the steps, then linear decay to zero."""
    import torch

    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / max(1, steps - warmup)))


def mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
