"""A FAISS inner-product index over unit vectors, addressed by memory-entry ids.

The CPU index is the master copy (it supports removal); when FAISS sees a GPU, searches
run on a GPU mirror that is rebuilt from the master after changes."""

from __future__ import annotations

import numpy as np


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class VectorIndex:
    def __init__(self, dim: int, use_gpu: bool | None = None, gpu_resources=None):
        """gpu_resources: a faiss.StandardGpuResources to share between indexes (each one
        reserves GPU scratch memory); made here when not given."""
        import faiss

        self.dim = dim
        self._cpu = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.use_gpu = gpu_count() > 0 if use_gpu is None else use_gpu
        self._gpu = None
        self._gpu_resources = gpu_resources

    def __len__(self) -> int:
        return self._cpu.ntotal

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        if len(ids):
            self._cpu.add_with_ids(vectors, ids)
            self._gpu = None

    def remove(self, ids) -> None:
        ids = np.asarray(list(ids), dtype=np.int64)
        if len(ids):
            self._cpu.remove_ids(ids)
            self._gpu = None

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to k (id, cosine score) pairs, best first."""
        k = min(k, len(self))
        if k <= 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        scores, ids = self._searcher().search(query, k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _searcher(self):
        if not self.use_gpu:
            return self._cpu
        if self._gpu is None:
            import faiss

            self._gpu_resources = self._gpu_resources or faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu)
        return self._gpu
