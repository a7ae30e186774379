"""DITTO (Xu et al., NeurIPS 2022, "Learning to Break the Loop"): teach a model that a sentence
it has already written should become less likely, not more, each time it comes back.

- Pseudo-repetitive data: a sentence of the corpus, after the sentence before it as a prefix,
  repeated up to the training length.
- The loss, on every token of repetitions 2..N: -log(1 - |p_n - lam * sg(p_{n-1})|), p_n being
  the model's probability of the token in repetition n and sg(p_{n-1}) the same token's
  probability one repetition earlier, detached. No loss on the prefix and the first copy.
- Training mixes it with ordinary language modelling: each batch is a DITTO batch with
  probability `mix`, otherwise an MLE batch of plain text from the same corpus.

Also here: the repetition metrics and the self-reinforcement analysis (the probability of a
repeated sentence's tokens, repetition after repetition)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from generation.backend import Decoding, check_lambda
from common.errors import InvalidInput, StoryloomError

LAMBDA = 0.5
PLAIN = Decoding(guard=False, repetition_penalty=1.0)  # greedy decoding with no anti-repetition control
DEFAULT_ADAPTER = Path(__file__).resolve().parents[1] / "assets" / "ditto-smollm2-135m"  # for the embedded model
META = "storyloom-ditto.json"  # written beside the adapter: what it was trained from and how
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MIN_SENTENCES = 20  # distinct usable sentences a training corpus must have


class AdapterUnavailable(StoryloomError):
    """A DITTO adapter is missing, unreadable or made for another model."""


# --- text -------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)]))\s+")
_HEADING = re.compile(r"^\s*=+.*=+\s*$")  # WikiText section titles: " = = Name = = "


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph, split on the text (end punctuation then space)."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(" ".join(text.split()))) if s]


def usable(sentence: str) -> bool:
    """A sentence worth repeating in training: 5 to 60 words, mostly letters, ended properly."""
    words = sentence.split()
    letters = sum(c.isalpha() for c in sentence)
    return 5 <= len(words) <= 60 and letters >= 0.6 * len(sentence.replace(" ", "")) and sentence[-1] in ".!?\"'”’)"


_WIKITEXT_JOINS = [(re.compile(a), b) for a, b in [
    (r" @([-,.])@ ", r"\1"),  # "north @-@ eastern", "1 @,@ 000", "2 @.@ 5"
    (r" ([.,;:!?%)\]}])", r"\1"),  # no space before closing punctuation
    (r"([(\[{$£]) ", r"\1"),  # nor after opening punctuation
    (r" (['’](?:s|re|ve|ll|d|m|t)\b|n['’]t\b)", r"\1"),  # "city 's", "don 't"
    (r'" ([^"]*?) "', r'"\1"'),  # quotes hug what they quote
]]


def is_wikitext(text: str) -> bool:
    """Word-level tokenized text in WikiText's style: `@-@` for hyphens, `<unk>` for rare words."""
    return " @-@ " in text or " <unk> " in text


def detokenize(paragraph: str) -> str:
    """A WikiText paragraph as ordinary prose, without its sentences that have a `<unk>` in them:
    the model should never learn to write `<unk>`, ` , ` or ` @-@ ` (storyloom writes fiction)."""
    for pattern, repl in _WIKITEXT_JOINS:
        paragraph = pattern.sub(repl, paragraph)
    return " ".join(s for s in split_sentences(paragraph) if "<unk>" not in s)


def paragraphs_of(text: str) -> list[str]:
    """Paragraphs (blank-line separated, hard wraps joined), without headings and without a Project
    Gutenberg header or licence; WikiText is turned back into prose (see `detokenize`)."""
    start, end = text.find("*** START OF"), text.find("*** END OF")
    if start >= 0:
        text = text[text.find("\n", start) + 1:end if end > start else None]
    clean = detokenize if is_wikitext(text) else (lambda paragraph: paragraph)
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip() and not _HEADING.match(ln)]
        if lines and (paragraph := clean(" ".join(" ".join(lines).split()))):
            out.append(paragraph)
    return out


@dataclass(frozen=True)
class Corpus:
    path: str
    sha256: str
    train: list[str]  # paragraphs
    held_out: list[str]  # the last `holdout` share of the paragraphs, never trained on

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(previous sentence, sentence) for every usable sentence of the training part that has
        one before it in its paragraph."""
        out = []
        for para in self.train:
            sentences = split_sentences(para)
            out += [(prev, s) for prev, s in zip(sentences, sentences[1:]) if usable(s)]
        return out


def read_corpus(path: str | Path, holdout: float = 0.25) -> Corpus:
    """A text file read as paragraphs; the last `holdout` share is kept out of training."""
    path = Path(path)
    if not 0 <= holdout < 1:
        raise InvalidInput(f"holdout must be in [0, 1), got {holdout}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read corpus {path}: {e.strerror}") from e
    text = raw.decode("utf-8", errors="replace")
    paragraphs = paragraphs_of(text)
    cut = len(paragraphs) - int(len(paragraphs) * holdout)
    corpus = Corpus(str(path), hashlib.sha256(raw).hexdigest(), paragraphs[:cut], paragraphs[cut:])
    distinct = {s for _, s in corpus.pairs}
    if len(distinct) < MIN_SENTENCES:
        raise InvalidInput(
            f"corpus {path} has {len(distinct)} distinct usable sentences in its training part "
            f"(need at least {MIN_SENTENCES}: sentences of 5 to 60 words, each after another sentence "
            "of its paragraph, paragraphs separated by blank lines)")
    return corpus


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


def encode_sentence(tokenizer, text: str) -> list[int]:
    """Token ids of a sentence as it appears after another (with its leading space), so every copy
    tokenizes the same way."""
    return tokenizer(" " + text, add_special_tokens=False)["input_ids"]


# --- losses -----------------------------------------------------------------------------------

def token_logprobs(logits, ids):
    """log p(ids[:, t] | ids[:, :t]) for t = 1..T-1, shape [B, T-1]."""
    import torch.nn.functional as F

    return -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")


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


def model_fingerprint(model) -> dict:
    """What an adapter must match: the architecture and its sizes."""
    c = model.config
    return {k: getattr(c, k, None) for k in
            ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "intermediate_size")}


def new_run(out: str | Path, corpus_paths: Sequence[str | Path], holdout: float) -> tuple[Path, list[Corpus]]:
    """The output folder (refused when it holds anything) and the corpora of a training run."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"{out} exists and is not empty; give a new folder")
    corpora = [read_corpus(path, holdout) for path in corpus_paths]
    if not corpora:
        raise InvalidInput("give at least one corpus")
    return out, corpora


def warmup_then_decay(optimizer, steps: int):
    """Linear warm-up over the first 5% of the steps, then linear decay to zero."""
    import torch

    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / max(1, steps - warmup)))


def train(model_spec: str | None, corpus_paths: Sequence[str | Path], out: str | Path, config: TrainConfig,
          device: str = "auto", progress: Progress | None = None, command: str = "") -> dict:
    """Fine-tune with DITTO + MLE on the training parts of one or more corpora and save to `out`: a
    LoRA adapter (config.lora) or a whole model folder. Returns the metadata written to
    out/storyloom-ditto.json."""
    import torch
    from accelerate import Accelerator

    from generation.local import load_model, pick_device, resolve_model

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
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank,
                                                 lora_dropout=0.0, target_modules=LORA_TARGETS,
                                                 task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)
    scheduler = warmup_then_decay(optimizer, config.steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    history = {"ditto": [], config.anchor: []}
    started = time.perf_counter()
    for step in range(1, config.steps + 1):
        kind, ids, starts, periods = batches.next()
        ids = ids.to(accelerator.device)
        logits = model(input_ids=ids).logits
        if kind == "ditto":
            loss = ditto_loss(logits, ids, starts, periods, config.lam)
        elif config.anchor == "kl":
            with torch.no_grad(), accelerator.unwrap_model(model).disable_adapter():
                base_logits = model(input_ids=ids).logits
            loss = kl_loss(logits, base_logits)
        else:
            loss = mle_loss(logits, ids)
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
    seconds = time.perf_counter() - started
    model = accelerator.unwrap_model(model)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    if config.lora:
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
    meta = {
        "kind": "lora" if config.lora else "full",
        "base_model": str(source) if model_spec else "embedded",
        "base_fingerprint": model_fingerprint(model),
        "corpora": [{"path": c.path, "sha256": c.sha256, "train_paragraphs": len(c.train),
                     "held_out_paragraphs": len(c.held_out)} for c in corpora],
        "ditto_samples": len(batches.samples), "config": asdict(config),
        "device": str(accelerator.device), "seconds": round(seconds, 1),
        "loss": {k: {"first_10": _mean(v[:10]), "last_10": _mean(v[-10:]), "batches": len(v)}
                 for k, v in history.items()},
        "command": command,
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


# --- loading ----------------------------------------------------------------------------------

def read_meta(adapter: str | Path) -> dict:
    folder = Path(adapter)
    if not (folder / "adapter_config.json").is_file():
        raise AdapterUnavailable(f"no DITTO adapter at {folder} (adapter_config.json missing)")
    try:
        return json.loads((folder / META).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise AdapterUnavailable(f"cannot read {folder / META}: {e}") from e


def attach_adapter(model, adapter: str | Path, merge: bool = True):
    """The model wrapped with the LoRA adapter at `adapter`, its update folded into the weights
    (`merge`) so decoding costs what the base model's does; AdapterUnavailable when the folder is
    missing, unreadable, or made for a model of another shape. `adapter_off` gives the base back."""
    from peft import PeftModel
    from safetensors import SafetensorError, safe_open

    meta = read_meta(adapter)
    want = meta.get("base_fingerprint")
    have = model_fingerprint(model)
    if want and want != have:
        diff = ", ".join(f"{k} {want.get(k)} != {have.get(k)}" for k in have if want.get(k) != have.get(k))
        raise AdapterUnavailable(f"the DITTO adapter at {adapter} was made for another model ({diff})")
    weights = Path(adapter) / "adapter_model.safetensors"
    try:
        with safe_open(str(weights), "pt") as f:  # a broken file is refused before peft changes the model
            f.keys()
        wrapped = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        raise AdapterUnavailable(f"cannot load the DITTO adapter at {adapter}: {str(e).splitlines()[0]}") from e
    if merge:
        wrapped.merge_adapter()
    return wrapped


@contextmanager
def adapter_off(model):
    """The base model inside the block: a merged adapter's update is taken out of the weights for it
    and folded back in after (peft would otherwise leave it unmerged, the slower way)."""
    merged = any(getattr(m, "merged", False) for m in model.modules())  # peft's LoRA layers say
    if merged:
        model.unmerge_adapter()
    try:
        with model.disable_adapter():
            yield model
    finally:
        if merged:
            model.merge_adapter()


# --- metrics ----------------------------------------------------------------------------------

def rep_n(tokens: Sequence, n: int) -> float:
    """1 - distinct n-grams / n-grams (Welleck et al., 2020): 0 when no n-gram repeats."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def rep_w(tokens: Sequence, w: int = 16) -> float:
    """The share of tokens that already occur among the w tokens before them (Fu et al., 2021)."""
    if not tokens:
        return 0.0
    return sum(tokens[i] in tokens[max(0, i - w):i] for i in range(len(tokens))) / len(tokens)


def rep_r(tokens: Sequence) -> float:
    """The share of tokens inside a repeated snippet: positions i whose bigram (t_i, t_i+1) occurs
    at another position too (Fu et al., 2021)."""
    if len(tokens) < 2:
        return 0.0
    seen: dict[tuple, int] = {}
    for i in range(len(tokens) - 1):
        seen[(tokens[i], tokens[i + 1])] = seen.get((tokens[i], tokens[i + 1]), 0) + 1
    inside = set()
    for i in range(len(tokens) - 1):
        if seen[(tokens[i], tokens[i + 1])] > 1:
            inside.update((i, i + 1))
    return len(inside) / len(tokens)


def _norm(sentence: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", sentence.lower()).split())


def repeated_sentences(text: str, before: str = "", min_words: int = 3) -> int:
    """How many complete sentences of `text` (of at least min_words words) repeat a sentence that
    came earlier, in `before` or in `text`. An unfinished last sentence is not counted."""
    seen = {_norm(s) for s in split_sentences(before)}
    sentences = split_sentences(text)
    if sentences and sentences[-1][-1] not in ".!?\"'”’)":
        sentences = sentences[:-1]
    count = 0
    for s in sentences:
        key = _norm(s)
        if len(key.split()) < min_words:
            continue
        count += key in seen
        seen.add(key)
    return count


def continuation_metrics(tokens: Sequence[int], text: str, prefix_text: str = "") -> dict:
    return {"rep_2": rep_n(tokens, 2), "rep_3": rep_n(tokens, 3), "rep_4": rep_n(tokens, 4),
            "rep_w": rep_w(tokens), "rep_r": rep_r(tokens),
            "sentence_repetition": float(repeated_sentences(text, prefix_text) > 0)}


@dataclass(frozen=True)
class Sample:
    source: str
    prefix: list[int]
    reference: list[int]  # the true continuation, for perplexity


def eval_samples(tokenizer, paragraphs: Sequence[str], source: str, count: int,
                 prefix_len: int = 50, continuation_len: int = 100) -> list[Sample]:
    """Up to `count` windows of prefix + true continuation, evenly spaced over the running text
    (paragraphs joined by blank lines) and not overlapping."""
    ids = tokenizer("\n\n".join(paragraphs), add_special_tokens=False)["input_ids"]
    size = prefix_len + continuation_len
    fit = len(ids) // size
    if fit == 0 or count < 1:
        return []
    step = max(1, fit // count)
    starts = [i * step * size for i in range(min(count, fit))]
    return [Sample(source, ids[s:s + prefix_len], ids[s + prefix_len:s + size]) for s in starts]


def evaluate(model, tokenizer, samples: Sequence[Sample], decoding: Decoding | None = None,
             batch: int = 16, progress: Callable[[int, int], None] | None = None) -> dict:
    """Greedy continuations of every sample's prefix (as long as its reference), their repetition
    metrics, the perplexity of the true continuations under the decoding distribution (the model's
    probabilities after the decoding's processors, so a processor that hurts real text shows),
    and tokens per second of generation."""
    import torch
    from transformers import LogitsProcessorList

    from generation.processors import breaker_ids, sentence_end_ids

    decoding = decoding or PLAIN
    processors = LogitsProcessorList(
        decoding.processors(sentence_end_ids(tokenizer, clauses=True), breaker_ids(tokenizer)))
    rows, gen_tokens, gen_seconds, impossible = [], 0, 0.0, 0
    device = model.device
    for i in range(0, len(samples), batch):
        group = samples[i:i + batch]
        prefixes = torch.tensor([s.prefix for s in group], device=device)  # all prefixes are one length
        new = len(group[0].reference)
        with torch.inference_mode():
            full = torch.tensor([s.prefix + s.reference for s in group], device=device)
            logp = reference_logprobs(model(input_ids=full).logits, full, len(group[0].prefix), processors)
            impossible += int((logp < FLOOR).sum())
            nll = (-logp.clamp(min=FLOOR)).sum(dim=1).tolist()
            started = time.perf_counter()
            output = model.generate(
                input_ids=prefixes, attention_mask=torch.ones_like(prefixes), do_sample=False,
                max_new_tokens=new, min_new_tokens=new, logits_processor=processors,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            gen_seconds += time.perf_counter() - started
        for sample, out, row_nll in zip(group, output[:, prefixes.shape[1]:].tolist(), nll):
            gen_tokens += len(out)
            text = tokenizer.decode(out, skip_special_tokens=True)
            rows.append({"source": sample.source, "text": text, "nll": row_nll, "tokens": len(sample.reference),
                         **continuation_metrics(out, text, tokenizer.decode(sample.prefix))})
        if progress:
            progress(min(i + batch, len(samples)), len(samples))
    result = summarize(rows, gen_tokens / max(gen_seconds, 1e-9))
    result["impossible_reference_tokens"] = impossible
    return result


FLOOR = math.log(1e-9)  # a true token the decoding rules out counts as this unlikely in perplexity


def reference_logprobs(logits, ids, start: int, processors):
    """log p(ids[:, t]) for the true continuation (t >= start) under the decoding distribution:
    the model's logits after `processors` (empty: the model's own), [B, T - start]."""
    import torch

    if not processors:
        return token_logprobs(logits, ids)[:, start - 1:]
    out = []
    for t in range(start - 1, ids.shape[1] - 1):
        scores = logits[:, t].float()
        for processor in processors:
            scores = processor(ids[:, :t + 1], scores)
        out.append(torch.log_softmax(scores, dim=-1).gather(1, ids[:, t + 1:t + 2]))
    return torch.cat(out, dim=1)


METRICS = ("rep_2", "rep_3", "rep_4", "rep_w", "rep_r", "sentence_repetition")


def summarize(rows: list[dict], tokens_per_second: float) -> dict:
    """Means of the metrics over all rows and per source; perplexity from the rows' summed
    negative log-likelihood ("nll") over their reference tokens ("tokens")."""
    def mean(rs, key):
        return round(sum(r[key] for r in rs) / len(rs), 4) if rs else None

    def perplexity(rs):
        return round(math.exp(sum(r["nll"] for r in rs) / max(1, sum(r["tokens"] for r in rs))), 3)

    sources = sorted({r["source"] for r in rows})
    by_source = {s: [r for r in rows if r["source"] == s] for s in sources}
    return {"samples": len(rows), **{k: mean(rows, k) for k in METRICS}, "perplexity": perplexity(rows),
            "tokens_per_second": round(tokens_per_second, 2),
            "by_source": {s: {**{k: mean(rs, k) for k in METRICS}, "perplexity": perplexity(rs), "samples": len(rs)}
                          for s, rs in by_source.items()},
            "examples": [{k: r[k] for k in ("source", "text", "rep_4", "sentence_repetition")}
                         for rs in by_source.values() for r in rs[:2]]}


# --- the self-reinforcement analysis ----------------------------------------------------------

def repetition_curve(model, tokenizer, pairs: Sequence[tuple[str, str]], repeats: int = 20,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """For each (prefix sentence, sentence), the sentence repeated `repeats` times after the prefix:
    the mean probability of its tokens in repetition 1, 2, ... (TP), and the share of tokens more
    likely than one repetition earlier (IP), as in DITTO's analysis. One forward pass per sentence."""
    import torch

    tp = [0.0] * repeats
    ip = [0.0] * repeats
    used = 0
    for done, (prev, sentence) in enumerate(pairs, 1):
        prefix, s = encode_sentence(tokenizer, prev), encode_sentence(tokenizer, sentence)
        ids = torch.tensor([prefix + s * repeats], device=model.device)
        with torch.inference_mode():
            p = token_logprobs(model(input_ids=ids).logits, ids).exp()[0].float().cpu()
        per = [p[len(prefix) - 1 + n * len(s):len(prefix) - 1 + (n + 1) * len(s)] for n in range(repeats)]
        for n in range(repeats):
            tp[n] += per[n].mean().item()
            if n:
                ip[n] += (per[n] > per[n - 1]).float().mean().item()
        used += 1
        if progress:
            progress(done, len(pairs))
    return {"repetition": list(range(1, repeats + 1)),
            "token_probability": [round(v / max(used, 1), 4) for v in tp],
            "increasing_share": [None] + [round(v / max(used, 1), 4) for v in ip[1:]],
            "sentences": used}


def plot_curves(curves: dict[str, dict], path: str | Path, title: str = "Self-reinforcement of repetition") -> None:
    """A PNG of token probability per repetition, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for name, curve in curves.items():
        ax.plot(curve["repetition"], curve["token_probability"], marker="o", markersize=3, label=name)
    ax.set_xlabel("repetition of the sentence")
    ax.set_ylabel("mean probability of its tokens")
    ax.set_ylim(0, 1)
    ax.set_xticks(range(1, len(next(iter(curves.values()))["repetition"]) + 1, 2))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
