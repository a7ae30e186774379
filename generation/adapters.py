"""LoRA adapters on a loaded model: attach one (DITTO's, checked against the model it was made
for), merge it into the weights, switch it off for a while, or fold it in for good."""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path

from common.errors import StoryloomError

DEFAULT_ADAPTER = Path(__file__).resolve().parents[1] / "assets" / "ditto-smollm2-135m"  # for the embedded model
META = "storyloom-ditto.json"  # written beside the adapter: what it was trained from and how


class AdapterUnavailable(StoryloomError):
    """A DITTO adapter is missing, unreadable or made for another model."""


def model_fingerprint(model) -> dict:
    """What an adapter must match: the architecture and its sizes."""
    c = model.config
    return {k: getattr(c, k, None) for k in
            ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "intermediate_size")}


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
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = any(m.merged for m in model.modules() if isinstance(m, BaseTunerLayer))  # peft's LoRA layers say
    if merged:
        model.unmerge_adapter()
    try:
        with model.disable_adapter():
            yield model
    finally:
        if merged:
            model.merge_adapter()


def base_weights(model, plain: bool):
    """`model` with the base weights of a merged adapter in it (its update taken out, its layers
    off), or the adapter's back (plain=False): the two halves of `adapter_off`, for a caller that
    switches between batches rather than around one call (generation.engine)."""
    if plain:
        model.unmerge_adapter()
        model.base_model.disable_adapter_layers()
    else:
        model.base_model.enable_adapter_layers()
        model.merge_adapter()
    return model


def plain_copy(model, adapter: bool = True):
    """A copy of `model` without peft's wrapping: an attached adapter's update folded into the
    weights (adapter=True) or taken out (the base model); `model` is left as it is."""
    import copy

    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return copy.deepcopy(model)
    with adapter_off(model) if not adapter else nullcontext():
        copied = copy.deepcopy(model)
    return copied.merge_and_unload() if adapter else copied.unload()


def fold_in(model):
    """The plain model, with an attached adapter's update in its weights for good (no way back to
    the base); a model without an adapter as it is."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model
