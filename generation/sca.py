"""SCA prompting ("Sorry, Come Again?", Rawte et al., 2024) for a person's instructions and premises.

`clarify` gathers rewordings of an instruction, keeps those whose meaning stays close to the
original (sentence-embedding cosine at or above `min_similarity`), and ranks them with the original
by how fully and evenly the model attends to their words, judged by Integrated Gradients.

The rewordings, `candidates` in all besides the original:
- the instruction with names and things from the story's memory for its pronouns
  (`generation.resolve`: "She takes it up" -> "Mara takes the brass key up"), at most two;
- paraphrases by the model, one call each, for the rest. When there was something to resolve, the
  model paraphrases the resolved wording without the summary: given the summary, the small model
  rewrites the summary instead of the instruction.

The comprehension score:

1. The candidate is put in a short chat prompt and the model writes its continuation greedily
   (`continuation_tokens` tokens).
2. IG (captum) attributes the log-likelihood of that continuation, sum_t log p(y_t | prompt, y_<t),
   to the input embeddings of the candidate's tokens, from a baseline where those embeddings are
   zero (every other position unchanged), with `ig_steps` Gauss-Legendre steps.
3. Each token's attribution is summed over the embedding dimensions; a word's attribution a_w is
   the absolute sum over its tokens (words are the whitespace-separated pieces of the candidate).
4. With shares p_w = a_w / sum(a) over the n words:
     evenness      E = -sum_w p_w log p_w / log n       (1 when every word gets the same share)
     coverage      C = |{w : p_w >= 1 / (4n)}| / n     (the words that get a real share at all)
     comprehension S = E * C                            (1 is best; n = 1 gives E = C = 1)

The person's text is never replaced here: `clarify` returns the ranked candidates and the caller
lets the person choose. [PAUSE] tokens are in `generation.pause` (tuning: `generation.pause_tuning`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field

from common.errors import InvalidInput, ParseError, StoryloomError
from generation import parse, prompts
from generation.backend import Backend, GradientScorer
from generation.measures import english_share, measure
from generation.resolve import resolve

MAX_CHARS = 2000  # an instruction or premise clarify accepts
MIN_ENGLISH = 0.5  # share of English words below which a text is refused
ATTRIBUTION_SYSTEM = "You write fiction."
ATTRIBUTION_ASK = "Instruction for the next paragraph: "

# progress(fraction done, what is happening)
Progress = Callable[[float, str], None]


class SCAUnavailable(StoryloomError):
    """The backend cannot give what SCA needs (gradients of a local model)."""


@dataclass(frozen=True)
class SCASettings:
    candidates: int = 5  # rewordings besides the original: resolved ones first, paraphrases for the rest
    ig_steps: int = 8
    continuation_tokens: int = 12
    # below: the paraphrase changed the meaning and is not offered. A faithful paraphrase that puts
    # names for the pronouns of a vague instruction scores about 0.5 against it (all-MiniLM-L6-v2);
    # the small model's inventions score 0.0-0.35 (measured on the development set)
    min_similarity: float = 0.4
    tries: int = 2  # calls per paraphrase at most

    def __post_init__(self):
        if not 0 <= self.candidates <= 10:
            raise InvalidInput(f"candidates must be 0 to 10, got {self.candidates}")
        if not 2 <= self.ig_steps <= 128:
            raise InvalidInput(f"ig_steps must be 2 to 128, got {self.ig_steps}")
        if not 1 <= self.continuation_tokens <= 64:
            raise InvalidInput(f"continuation_tokens must be 1 to 64, got {self.continuation_tokens}")
        if not 0 <= self.min_similarity <= 1:
            raise InvalidInput(f"min_similarity must be between 0 and 1, got {self.min_similarity}")


@dataclass(frozen=True)
class Attribution:
    words: list[tuple[str, float]]  # each word of the text and its share p_w of the attribution
    evenness: float
    coverage: float
    delta: float  # IG's convergence error relative to f(input) - f(baseline)
    continuation: str  # what the model wrote after the prompt (the attributed target)

    @property
    def comprehension(self) -> float:
        return self.evenness * self.coverage


@dataclass
class Candidate:
    text: str
    origin: str  # "yours", "names from the story: She → Mara, ..." or "paraphrase N"
    similarity: float  # cosine to the original
    measures: dict
    attribution: Attribution | None = None  # None for a candidate whose meaning drifted

    @property
    def drifted(self) -> bool:
        return self.attribution is None

    @property
    def comprehension(self) -> float | None:
        return None if self.attribution is None else self.attribution.comprehension

    def to_dict(self) -> dict:
        a = self.attribution
        return {"text": self.text, "origin": self.origin, "similarity": round(self.similarity, 3),
                "comprehension": None if a is None else round(a.comprehension, 4),
                "evenness": None if a is None else round(a.evenness, 4),
                "coverage": None if a is None else round(a.coverage, 4),
                "ig_delta": None if a is None else round(a.delta, 4),
                "words": None if a is None else [[w, round(p, 4)] for w, p in a.words],
                "rejected": "meaning drifted" if a is None else None, **self.measures}


@dataclass
class Clarification:
    original: str
    candidates: list[Candidate]  # ranked: best comprehension first, the drifted ones last
    ig_steps: int
    seconds: float
    problems: list[str] = field(default_factory=list)  # paraphrase calls that gave nothing usable

    @property
    def best(self) -> Candidate:
        return self.candidates[0]

    def to_dict(self) -> dict:
        return {"original": self.original, "ig_steps": self.ig_steps, "seconds": round(self.seconds, 2),
                "candidates": [c.to_dict() for c in self.candidates], "problems": self.problems}


def check_text(text: str) -> str:
    """The instruction, stripped; a clear error for one clarify cannot work on."""
    text = " ".join((text or "").split())
    if not text:
        raise InvalidInput("the instruction is empty: write what should happen next, then clarify it")
    if len(text) > MAX_CHARS:
        raise InvalidInput(f"the instruction has {len(text):,} characters; clarify works on one instruction of at "
                           f"most {MAX_CHARS:,} (a plan or a premise, not a chapter)")
    share = english_share(text)
    if share < MIN_ENGLISH:
        raise InvalidInput(f"the instruction does not look like English ({share:.0%} of its words are English "
                           "words); clarify's paraphrases and measures work for English only")
    return text


def paraphrases(backend, text: str, context: str = "", count: int = 5, tries: int = 2,
                progress: Progress | None = None) -> tuple[list[str], list[str]]:
    """Up to `count` distinct rewordings, one call each (at most `tries` per rewording), and the
    problems of the calls that gave nothing usable."""
    found: list[str] = []
    problems: list[str] = []
    request = prompts.paraphrase(text, context)
    sentences = max(1, sum(1 for _ in parse.SENTENCE_END.finditer(text)))
    for number in range(1, count + 1):
        for _ in range(tries):
            if progress:
                progress(0.5 * (number - 1) / max(count, 1), f"writing paraphrase {number} of {count}")
            raw = ""
            with closing(backend.generate(request)) as chunks:
                for chunk in chunks:
                    raw += chunk
                    if "\n" in raw.strip() or parse.sentences_done(raw, sentences):
                        break
            try:
                answer = parse.parse_paraphrase(raw, text)
                if any(parse.similar(answer, earlier, 0.9) for earlier in found):
                    raise ParseError("the paraphrase repeats an earlier one")
            except ParseError as e:
                problems.append(f"paraphrase {number}: {e}")
                continue
            found.append(answer)
            break
    return found, problems


def _word_spans(text: str, offset: int) -> list[tuple[int, int, str]]:
    return [(m.start() + offset, m.end() + offset, m.group()) for m in re.finditer(r"\S+", text)]


def score_words(shares: list[float]) -> tuple[float, float]:
    """(evenness, coverage) of the words' attribution shares, as in the module docstring."""
    n = len(shares)
    if n <= 1:
        return 1.0, 1.0
    entropy = -sum(p * math.log(p) for p in shares if p > 0)
    return entropy / math.log(n), sum(p >= 1 / (4 * n) for p in shares) / n


def attribute(model, tokenizer, text: str, steps: int = 8, continuation_tokens: int = 12) -> Attribution:
    """Integrated Gradients of the model's own continuation over the words of `text` (module docstring)."""
    import torch
    from captum.attr import IntegratedGradients

    asked = ATTRIBUTION_ASK + text
    messages = [{"role": "system", "content": ATTRIBUTION_SYSTEM}, {"role": "user", "content": asked}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor([encoded["input_ids"]], device=model.device)
    start = prompt.index(asked) + len(ATTRIBUTION_ASK)
    spans = _word_spans(text, start)
    positions = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > start and a < start + len(text) and b > a]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=continuation_tokens, min_new_tokens=1, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    reply = out[0, ids.shape[1]:]
    k = len(reply)
    embeddings = model.get_input_embeddings()(out).detach()
    baseline = embeddings.clone()
    baseline[0, positions] = 0

    def log_likelihood(inputs):
        logits = model(inputs_embeds=inputs, logits_to_keep=k + 1).logits[:, :-1].float()
        chosen = torch.log_softmax(logits, dim=-1).gather(-1, reply.view(1, -1, 1).expand(inputs.shape[0], -1, 1))
        return chosen.squeeze(-1).sum(-1)

    with torch.enable_grad():
        attributions, delta = IntegratedGradients(log_likelihood).attribute(
            embeddings, baselines=baseline, n_steps=steps, internal_batch_size=steps,
            return_convergence_delta=True)
        with torch.no_grad():
            gap = float((log_likelihood(embeddings) - log_likelihood(baseline)).abs().item())
    per_token = attributions[0].sum(-1).detach().float()
    per_word = []
    for a, b, _ in spans:
        inside = [i for i in positions if encoded["offset_mapping"][i][1] > a and encoded["offset_mapping"][i][0] < b]
        per_word.append(float(per_token[inside].sum().abs()) if inside else 0.0)
    total = sum(per_word) or 1.0
    shares = [w / total for w in per_word]
    evenness, coverage = score_words(shares)
    return Attribution(words=[(w, p) for (_, _, w), p in zip(spans, shares)], evenness=evenness, coverage=coverage,
                       delta=abs(float(delta.item())) / gap if gap else 0.0,
                       continuation=tokenizer.decode(reply, skip_special_tokens=True))


def clarify(backend: Backend, embedder, text: str, context: str = "", settings: SCASettings | None = None,
            progress: Progress | None = None, last: str = "", scorer: GradientScorer | None = None) -> Clarification:
    """The original and its rewordings, ranked by comprehension (module docstring). `context` is the
    story's short-term memory, `last` its last paragraph. The paraphrases come from `backend`;
    the gradients (and the thing an "it" names) from `scorer`, a model in this process, by default
    the backend's own (`backend.gradients`): a served model that only gives text can write the
    paraphrases while the small local model scores them. The person's text is returned as one of
    the candidates."""
    settings = settings or SCASettings()
    started = time.monotonic()
    text = check_text(text)
    scorer = scorer or backend.gradients
    if scorer is None:
        raise SCAUnavailable(f"the {backend.name} backend gives no gradients, so clarify cannot score the "
                             "paraphrases; clarify needs the local model")
    if progress:
        progress(0.0, "putting names from the story for the pronouns")
    with scorer.exclusive() as (model, tokenizer):
        resolved = resolve(text, context, last, model, tokenizer)[: settings.candidates]
    source = resolved[0].text if resolved else text
    found, problems = paraphrases(backend, source, "" if resolved else context,
                                  settings.candidates - len(resolved), settings.tries, progress)
    wordings = [(text, "yours")] + [(r.text, "names from the story: " + ", ".join(
        f"{c.pronoun} → {c.referent}" for c in r.resolutions)) for r in resolved]
    wordings += [(t, f"paraphrase {i}") for i, t in enumerate(found, 1)
                 if not any(parse.similar(t, earlier, 0.95) for earlier, _ in wordings)]
    vectors = embedder.encode([t for t, _ in wordings])
    candidates = [Candidate(t, origin, float(vectors[0] @ vectors[i]), measure(t).to_dict())
                  for i, (t, origin) in enumerate(wordings)]
    kept = [c for c in candidates if c.similarity >= settings.min_similarity or c.origin == "yours"]
    with scorer.exclusive() as (model, tokenizer):
        for number, candidate in enumerate(kept, 1):
            if progress:
                progress(0.5 + 0.5 * (number - 1) / len(kept), f"Integrated Gradients for candidate {number} of "
                         f"{len(kept)} ({settings.ig_steps} steps)")
            candidate.attribution = attribute(model, tokenizer, candidate.text, settings.ig_steps,
                                              settings.continuation_tokens)
    if progress:
        progress(1.0, "done")
    ranked = sorted(candidates, key=lambda c: (c.drifted, -(c.comprehension or 0.0)))
    return Clarification(text, ranked, settings.ig_steps, time.monotonic() - started, problems)
