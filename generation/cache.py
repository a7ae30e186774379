"""The engine's key/value cache: each layer keeps its keys and values in a buffer with room to
grow, so a decoding step writes its new column in place. transformers' DynamicCache joins the
new column on by concatenation, which copies the whole cache at every step: 46 KB a token for
SmolLM2-135M, so at 8 rows of 600 tokens about 220 MB read and written per step, next to the
540 MB of float32 weights the step reads anyway.

A layer hands the model a view of its filled columns (no copy); when the buffer is full it
moves to one with `ROOM` more columns than it needs, so the copy happens once in ROOM steps.
Models whose cache is not plain full attention (sliding windows and the like) keep
transformers' own layers."""

from __future__ import annotations

from functools import cache

ROOM = 128  # spare columns a layer takes each time it grows


@cache  # one class, made on first use (transformers is imported then, not at import)
def _roomy():
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        """A DynamicLayer that writes into spare room instead of concatenating."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._keys = self._values = None  # the buffers; self.keys and self.values view their filled part
            self._filled = 0

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            end = self._filled + new
            if self._keys is None or end > self._keys.shape[-2]:
                self._keys, self._values = self._grow(key_states, value_states, end + ROOM)
            self._keys[..., self._filled:end, :] = key_states
            self._values[..., self._filled:end, :] = value_states
            self._filled = end
            self.keys, self.values = self._keys[..., :end, :], self._values[..., :end, :]
            return self.keys, self.values

        def _grow(self, key_states, value_states, width: int):
            """New buffers `width` columns wide holding the columns filled so far."""
            shape = (*key_states.shape[:-2], width, key_states.shape[-1])
            keys = key_states.new_empty(shape)
            values = value_states.new_empty((*shape[:-1], value_states.shape[-1]))
            if self._filled:
                keys[..., :self._filled, :] = self._keys[..., :self._filled, :]
                values[..., :self._filled, :] = self._values[..., :self._filled, :]
            return keys, values

        def get_seq_length(self) -> int:
            return self._filled

        def _unsupported(self, *args) -> None:
            raise NotImplementedError("the engine builds a new cache to change its rows or length")

        crop = batch_repeat_interleave = batch_select_indices = reorder_cache = _unsupported

    return RoomyLayer


def empty(config):
    """A cache for a prompt's reading."""
    from transformers import DynamicCache
    from transformers.cache_utils import Cache, DynamicLayer

    dynamic = DynamicCache(config=config)
    if not dynamic.layers or any(type(layer) is not DynamicLayer for layer in dynamic.layers):
        return dynamic
    return Cache(layers=[_roomy()() for _ in dynamic.layers])


def holding(pairs, config):
    """A cache holding these (keys, values) per layer, with room to grow."""
    from transformers import DynamicCache

    cache = empty(config)
    if isinstance(cache, DynamicCache):
        return DynamicCache(ddp_cache_data=pairs, config=config)
    for layer, (keys, values) in zip(cache.layers, pairs):
        layer.update(keys, values)
    return cache
