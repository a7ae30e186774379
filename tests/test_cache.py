"""The engine's key/value cache (generation/cache.py), on a small random Llama: a model decoding
through it computes exactly what it computes through transformers' DynamicCache, across the
buffer's growth; a step writes in place; caches made from tensors hold them; models with sliding
windows keep transformers' own layers."""

from __future__ import annotations

import pytest
import torch

from generation import cache as kv


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    return LlamaForCausalLM(config).eval()


def decoded(model, cache, prompt, steps: int) -> list[torch.Tensor]:
    """The logits of `steps` greedy steps after reading `prompt` into `cache`."""
    with torch.inference_mode():
        out = model(input_ids=prompt, cache=cache, use_cache=True)
        logits = [out.logits[:, -1]]
        for _ in range(steps):
            token = logits[-1].argmax(-1, keepdim=True)
            out = model(input_ids=token, cache=cache, use_cache=True)
            logits.append(out.logits[:, -1])
    return logits


def test_decoding_through_it_gives_exactly_what_dynamic_cache_gives_as_it_grows(model):
    from transformers import DynamicCache

    prompt = torch.randint(0, 300, (2, 20))
    steps = 2 * kv.ROOM + 10  # the buffer grows twice
    cache = kv.empty(model.config)
    ours = decoded(model, cache, prompt, steps)
    theirs = decoded(model, DynamicCache(config=model.config), prompt, steps)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert cache.get_seq_length() == 20 + steps
    assert cache.layers[0].keys.shape[-2] == 20 + steps


def test_a_step_writes_into_the_buffer_it_has(model):
    cache = kv.empty(model.config)
    decoded(model, cache, torch.randint(0, 300, (1, 5)), 1)
    layer = cache.layers[0]
    before = layer.keys.data_ptr()
    with torch.inference_mode():
        model(input_ids=torch.tensor([[7]]), cache=cache, use_cache=True)
    assert layer.keys.data_ptr() == before and layer.keys.shape[-2] == 7


def test_a_cache_made_from_tensors_holds_them_and_continues_like_the_original(model):
    from transformers import DynamicCache

    prompt = torch.randint(0, 300, (1, 12))
    original = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(input_ids=prompt, cache=original, use_cache=True)
    copy = kv.holding([(layer.keys.expand(3, -1, -1, -1), layer.values.expand(3, -1, -1, -1))
                       for layer in original.layers], model.config)
    assert copy.get_seq_length() == 12 and copy.layers[1].keys.shape[0] == 3
    assert all(torch.equal(a.keys[2], b.keys[0]) for a, b in zip(copy.layers, original.layers))
    copied = DynamicCache(ddp_cache_data=[(layer.keys.expand(3, -1, -1, -1).contiguous(),
                                           layer.values.expand(3, -1, -1, -1).contiguous())
                                          for layer in original.layers], config=model.config)
    token = torch.tensor([[5], [6], [7]])
    with torch.inference_mode():
        ours = model(input_ids=token, cache=copy, use_cache=True).logits
        theirs = model(input_ids=token, cache=copied, use_cache=True).logits
    assert torch.equal(ours, theirs)


def test_a_model_with_sliding_windows_keeps_transformers_layers():
    from transformers import MistralConfig
    from transformers.cache_utils import DynamicSlidingWindowLayer

    config = MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, sliding_window=16, vocab_size=300)
    assert all(isinstance(layer, DynamicSlidingWindowLayer) for layer in kv.empty(config).layers)
