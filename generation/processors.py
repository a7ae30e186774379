"""Decoding processors, in transformers' LogitsProcessor shape: arguments checked in __init__,
__call__(input_ids, scores) returns a new tensor."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class AllowOnly(LogitsProcessor):
    """Constrained choice: every token but `token_ids` gets -inf, so the model must pick one of them
    (the one it finds most likely under greedy decoding)."""

    def __init__(self, token_ids: list[int]):
        if not token_ids or not all(isinstance(t, int) and t >= 0 for t in token_ids):
            raise ValueError(f"token_ids must be a non-empty list of token ids, got {token_ids!r}")
        self.token_ids = sorted(set(token_ids))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = torch.full_like(scores, float("-inf"))
        allowed[:, self.token_ids] = scores[:, self.token_ids]
        return allowed
