"""[PAUSE] tokens (Goyal et al., 2024; used by SCA prompting, Rawte et al., 2024): a special token
with no meaning of its own, put at clause and sentence boundaries of a long prompt, which gives a
model tuned to use it extra computation before it has to answer.

- `insert_pauses` puts `per_boundary` pauses after each sentence end (and after each , ; : when
  `clauses`) of a text of at least `min_words` words.
- `add_pause_token` adds the token to a tokenizer and a model (the embeddings resized, the new row
  initialised to the mean of the others); generation never writes it (the local backend
  suppresses it).
- `attach_pauses` loads an adapter tuned to read pauses (`generation.pause_tuning`) into a model
  for serving (merged into the weights).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidInput
from generation.adapters import AdapterUnavailable, model_fingerprint

PAUSE = "[PAUSE]"
META = "storyloom-pause.json"
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"'”’)\]]*(?=\s)|(?<=[,;:])(?=\s)")
_SENTENCE = re.compile(r"(?<=[.!?…])[\"'”’)\]]*(?=\s)")


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
