"""A FAISS inner-product index over unit vectors, addressed by memory-entry ids.

Up to EXACT_LIMIT vectors it is exact (a flat index: a story of 10,000 paragraphs holds about
30,000 entries, searched in a few milliseconds). Beyond that a flat scan costs tens of
milliseconds per query, so the index becomes an inverted file (IVF: vectors grouped around
centroids, a query scans the `nprobe` nearest groups), retrained as it grows; benchmarks/
memory_bench.py measures its recall against exact search. Both kinds support removal by id.

The CPU index is the master copy; when FAISS sees a GPU, searches run on a GPU mirror that
is rebuilt from the master after changes."""

from __future__ import annotations

import math

import numpy as np

EXACT_LIMIT = 50_000
RETRAIN_GROWTH = 4  # an IVF index is retrained once it holds this many times what it was trained on
TRAIN_PER_LIST = 64  # training sample: this many vectors per inverted list
GPU_MAX_K = 2048


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus()  # 0 in faiss-cpu


def lists_for(n: int) -> int:
    """Inverted lists for n vectors: about 2·√n (2,000 at a million)."""
    return max(64, int(2 * math.sqrt(n)))


def probes_for(nlist: int) -> int:
    """Lists scanned per query: a tenth of them, at least 32. In benchmarks/memory_bench.py a
    thirty-second (19 of 632 lists at 100k entries) recalled only 0.89 of the exact top 8."""
    return min(nlist, max(32, nlist // 10))


class VectorIndex:
    def __init__(self, dim: int, use_gpu: bool | None = None, gpu_resources=None, exact_limit: int = EXACT_LIMIT):
        """gpu_resources: a faiss.StandardGpuResources to share between indexes (each one
        reserves GPU scratch memory); made here when not given."""
        import faiss

        self.dim = dim
        self.exact_limit = exact_limit
        self._cpu = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._quantizer = None  # the IVF's centroid index, kept referenced while the IVF lives
        self.trained_on = 0  # vectors the IVF was trained on (0: exact)
        self.use_gpu = gpu_count() > 0 if use_gpu is None else use_gpu
        self._gpu = None
        self._gpu_resources = gpu_resources

    def __len__(self) -> int:
        return self._cpu.ntotal

    @property
    def exact(self) -> bool:
        return self.trained_on == 0

    @property
    def nlist(self) -> int:
        """The inverted lists of an IVF index (0 while exact)."""
        return 0 if self.exact else self._cpu.nlist

    @property
    def nprobe(self) -> int:
        """The lists an IVF search scans (0 while exact); set it to trade recall for speed."""
        return 0 if self.exact else self._cpu.nprobe

    @nprobe.setter
    def nprobe(self, lists: int) -> None:
        if self.exact:
            raise ValueError("an exact index scans every vector; it has no lists to probe")
        self._cpu.nprobe = lists
        self._gpu = None

    def serialized_bytes(self) -> int:
        """The size of the index in FAISS's own file format."""
        import faiss

        return len(faiss.serialize_index(self._cpu))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        if len(ids):
            self._cpu.add_with_ids(vectors, ids)
            self._gpu = None
            total = self._cpu.ntotal
            if (self.exact and total > self.exact_limit) or (not self.exact and total > RETRAIN_GROWTH * self.trained_on):
                self._rebuild_ivf()

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
        searcher = self._searcher() if k <= GPU_MAX_K else self._cpu  # FAISS on a GPU answers k <= 2048
        scores, ids = searcher.search(query, k)
        nprobe = self.nprobe
        while (ids[0] < 0).any() and not self.exact and nprobe < self._cpu.nlist:
            # the lists scanned held fewer than k vectors: scan more lists, so that fewer than k
            # results always means the index holds fewer than k
            import faiss

            nprobe = min(2 * nprobe, self._cpu.nlist)
            scores, ids = self._cpu.search(query, k, params=faiss.SearchParametersIVF(nprobe=nprobe))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything in the index."""
        import faiss

        if self.exact:
            ids = faiss.vector_to_array(self._cpu.id_map).astype(np.int64)
            return ids, self._cpu.index.reconstruct_n(0, self._cpu.ntotal)
        lists = self._cpu.invlists
        ids, vectors = [], []
        for number in range(self._cpu.nlist):
            size = lists.list_size(number)
            if size:
                ids.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
                codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()
                vectors.append(codes.view(np.float32).reshape(size, self.dim))
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(ids).astype(np.int64), np.concatenate(vectors)

    def _rebuild_ivf(self) -> None:
        """Move everything into an IVF index trained on a sample of the vectors held now."""
        import faiss

        ids, vectors = self.contents()
        nlist = lists_for(len(ids))
        sample = vectors[np.random.default_rng(0).permutation(len(ids))[:TRAIN_PER_LIST * nlist]]
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = 10
        ivf.train(sample)
        ivf.add_with_ids(vectors, ids)
        ivf.nprobe = probes_for(nlist)
        self._cpu, self._quantizer, self.trained_on = ivf, quantizer, len(ids)
        self._gpu = None

    def _searcher(self):
        if not self.use_gpu:
            return self._cpu
        if self._gpu is None:
            import faiss

            self._gpu_resources = self._gpu_resources or faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._cpu)
        return self._gpu
