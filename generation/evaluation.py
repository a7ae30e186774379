"""Measuring a model's repetition: greedy continuations of held-out prefixes with their repetition
metrics and perplexity (`evaluate`), and DITTO's self-reinforcement analysis (`repetition_curve`:
the probability of a repeated sentence's tokens, repetition after repetition)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from generation.backend import Decoding
from generation.corpus import encode_sentence
from generation.metrics import METRICS, continuation_metrics, token_logprobs

PLAIN = Decoding(guard=False, repetition_penalty=1.0)  # greedy decoding with no anti-repetition control


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

    from generation.processors import breaker_ids, for_decoding, sentence_end_ids

    decoding = decoding or PLAIN
    processors = LogitsProcessorList(
        for_decoding(decoding, sentence_end_ids(tokenizer, clauses=True), breaker_ids(tokenizer)))
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
    result["repeating_samples"] = [i for i, r in enumerate(rows) if r["sentence_repetition"]]  # for paired comparisons
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
