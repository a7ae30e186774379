"""Builds the objects from the settings. Nothing heavy happens here: models load on first use."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.service import Limits, StoryService
from app.service.readiness import Readiness
from generation.adapters import DEFAULT_ADAPTER
from generation.backend import Backend, Decoding, GradientScorer
from generation.local import TransformersBackend
from generation.recurrence import Writer
from memory.embedder import Embedder
from memory.longterm import LongTermMemory
from storage.db import open_database
from common.errors import DatabaseUnavailable


def build_service(settings: Settings) -> StoryService:
    if not settings.database_url:
        try:
            settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # its owner's only
        except OSError as e:
            raise DatabaseUnavailable(f"cannot create the data directory {settings.data_dir}: {e.strerror}") from e
    backend = build_backend(settings)
    db = open_database(settings.database())
    embedder = Embedder(settings.embedder, device=None if settings.device == "auto" else settings.device,
                        dtype=settings.embedder_dtype)
    limits = Limits(settings.max_premise_chars, settings.max_plan_chars, top_k=settings.top_k,
                    draft_paragraphs=settings.max_draft_paragraphs, draft_words=settings.max_draft_words,
                    backup_bytes=settings.max_backup_bytes)
    decoding = Decoding(ditto=settings.ditto, guard=settings.guard, guard_lambda=settings.guard_lambda)
    writer = Writer(backend, retries=settings.retries, one_call=settings.one_call)
    return StoryService(db, LongTermMemory(embedder), writer, limits, decoding,
                        scorer=build_scorer(settings, backend), readiness=readiness(backend, embedder))


def readiness(backend: Backend, embedder: Embedder) -> Readiness:
    """What `storyloom serve` loads as it starts: the model in this process (a served one is the
    server's to load) and the embedder. SCA's scorer for a served model loads on the first clarify."""
    parts = [("the language model", backend.load)] if isinstance(backend, TransformersBackend) else []
    return Readiness([*parts, ("the embedding model", embedder.load)])


def build_backend(settings: Settings) -> Backend:
    if settings.backend == "openai":
        from generation.remote import OpenAIBackend

        return OpenAIBackend(settings.openai_base_url, settings.openai_model, settings.openai_api_key,
                             settings.stream_timeout, settings.retries, settings.openai_api, settings.openai_tokenizer,
                             base_model=settings.openai_base_model)
    return TransformersBackend(settings.model, settings.device, settings.stream_timeout,
                               adapter=ditto_adapter(settings), pause_adapter=settings.pause_adapter,
                               batching=settings.batching, max_batch=settings.max_batch,
                               weights=settings.weights)


def build_scorer(settings: Settings, backend: Backend) -> GradientScorer:
    """Clarify's gradients: the writing model's own when it runs in this process; for a served
    model, which gives text only, the embedded model (loaded on the first clarify, never otherwise)."""
    return backend.gradients or TransformersBackend(None, settings.device, settings.stream_timeout, weights="float32")


def ditto_adapter(settings: Settings) -> Path | None:
    """The adapter to load: the configured one, or the embedded model's own from assets/; none
    when DITTO is switched off."""
    if not settings.ditto:
        return None
    if settings.ditto_adapter:
        return settings.ditto_adapter
    return DEFAULT_ADAPTER if not settings.model else None


def quiet_libraries() -> None:
    """Keep library progress bars and warnings out of the person's terminal."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF reader draws its own bar
    from transformers.utils import logging as hf_logging

    # library notes addressed to library developers, not to a writer
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message="All adapters are already merged", category=UserWarning)

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
