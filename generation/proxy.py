"""Proxy-tuning (Liu et al., 2024) at decode time: a model that was never tuned is steered by the
difference a tuning made to a small model of the same vocabulary,

    scores = log p_base(x | base prompt) + alpha * (log p_expert(x | expert prompt) - log p_anti(x | anti prompt))

where the expert is the small tuned model (here: the [PAUSE]-tuned one, whose prompt carries
pauses) and the anti-expert the same small model untuned. Each model reads its own prompt; the
tokens generated so far are appended to all three. Batch size 1 (one story at a time)."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class _Follower:
    """A small model that reads its prompt once, then one new token per step (with its cache)."""

    def __init__(self, model, prompt_ids: torch.LongTensor):
        self.model, self.prompt_ids = model, prompt_ids
        self.cache, self.seen = None, 0

    def log_probs(self, new_ids: torch.LongTensor) -> torch.Tensor:
        """Log-probabilities of the next token after the prompt and `new_ids` (all generated so far)."""
        if self.cache is None:
            feed = torch.cat([self.prompt_ids, new_ids], dim=1)
        else:
            feed = new_ids[:, self.seen:]
        with torch.no_grad():
            out = self.model(input_ids=feed.to(self.model.device), past_key_values=self.cache, use_cache=True)
        self.cache, self.seen = out.past_key_values, new_ids.shape[1]
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)


class ProxyTuned(LogitsProcessor):
    def __init__(self, expert, expert_prompt_ids, anti_expert, anti_prompt_ids, start: int, alpha: float = 1.0):
        """`start`: the length of the base model's prompt (what it generates comes after)."""
        if not 0 < alpha <= 4:
            raise ValueError(f"alpha must be in (0, 4], got {alpha}")
        if expert_prompt_ids.shape[0] != 1 or anti_prompt_ids.shape[0] != 1:
            raise ValueError("proxy-tuning decodes one sequence at a time")
        self.expert, self.anti = _Follower(expert, expert_prompt_ids), _Follower(anti_expert, anti_prompt_ids)
        self.start, self.alpha = start, alpha

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        new = input_ids[:, self.start:].cpu()
        expert, anti = self.expert.log_probs(new), self.anti.log_probs(new)
        width = min(scores.shape[-1], expert.shape[-1], anti.shape[-1])  # the expert may know more ([PAUSE])
        shift = expert[:, :width] - anti[:, :width]
        out = torch.log_softmax(scores.float(), dim=-1)
        out[:, :width] += self.alpha * shift[:, :width].to(out.device)
        return out.to(scores.dtype)
