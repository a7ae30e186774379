"""Settings from the environment (prefix STORYLOOM_) or a .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.db import sqlite_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STORYLOOM_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="where the SQLite database lives")
    database_url: str | None = Field(None, description="any SQLAlchemy URL; default a SQLite file in data_dir")
    backend: Literal["local", "openai"] = Field("local", description="local: the model runs in this process; "
                                                "openai: a model behind an OpenAI-compatible server (vLLM, "
                                                "transformers serve)")
    openai_base_url: str = Field("http://127.0.0.1:8000/v1", description="the server's API root")
    openai_model: str | None = Field(None, description="the model's name on the server")
    openai_base_model: str | None = Field(
        None, description="the served model's name without DITTO (vLLM serves the DITTO adapter as a LoRA module "
        "named by STORYLOOM_OPENAI_MODEL): stories that turn DITTO off ask for this one")
    openai_api_key: str | None = Field(None, description="the server's API key, if it wants one")
    openai_api: Literal["chat", "completions"] | None = Field(None, description="chat, or completions with the "
                                                              "prompt rendered here (default with a tokenizer)")
    openai_tokenizer: str | None = Field(None, description="the served model's tokenizer as a local folder or "
                                         ".gguf: exact prompts and token counts")
    model: str | None = Field(None, description="a Hugging Face model folder or .gguf file; default the embedded SmolLM2")
    embedder: str | None = Field(None, description="a sentence-transformers folder; default the embedded MiniLM")
    embedder_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 where the hardware computes it natively (twice as fast on a CPU "
        "with AVX512-BF16, the same vectors to cosine 0.9999), else float32")
    device: str = Field("auto", description="auto, cpu or cuda")
    host: str = Field("127.0.0.1", description="the address to serve on; 0.0.0.0 for every network")
    port: int = 7860
    auth: bool = Field(False, description="accounts: each person logs in and sees only their own stories "
                       "(users from `storyloom user add`)")
    files_ttl: int = Field(3600, ge=1, le=604800, description="seconds an export or an upload stays on the "
                           "server to download (Gradio's cache and storyloom's exports)")
    session_ttl: int = Field(43200, ge=1, le=31_536_000, description="seconds a login holds (default 12 hours); "
                             "a password change or logging out ends it at once")
    allowed_hosts: str = Field("", description="comma-separated names people reach this server by, besides "
                               "loopback and --host (needed with --host 0.0.0.0; * for any): other Host headers "
                               "are refused, which stops DNS rebinding")
    allowed_origins: str = Field("", description="comma-separated origins (https://example.org) whose pages may "
                                 "call this server from the browser; default none but its own")
    allow_no_auth: bool = Field(False, description="serve a non-loopback address without accounts (everyone "
                                "who reaches it shares every story)")
    writers: int | None = Field(None, ge=1, le=64, description="events that use the model (steps, clarify, "
                                "reading) run this many at a time, the others wait in line; auto runs have a "
                                "line of their own. Default: max_batch with the local model batching (their "
                                "calls decode together), else 1 (calls take turns on one model)")
    batching: bool = Field(True, description="the local model decodes concurrent calls together as rows of one batch "
                           "(off: one generation at a time through transformers' generate, the earlier way)")
    max_batch: int = Field(8, ge=1, le=256, description="rows the local model decodes at once, at most")
    weights: Literal["float32", "int8"] = Field(
        "float32", description="the format the local model decodes in on the CPU: int8 decodes from a copy with "
        "int8 decoder layers, about 1.6 times as fast, the perplexity within 0.5%, repetition a little higher "
        "(benchmarks/weights_bench.py); "
        "a GPU decodes in bfloat16 either way")
    preload: bool = Field(True, description="`storyloom serve` loads the models in the background as it starts, so "
                          "that the first step does not wait for them (off: each loads on its first use)")
    one_call: bool = Field(False, description="write each step in one call in RecurrentGPT's format "
                           "(for capable models); default: focused calls, which small models can follow")
    retries: int = Field(3, ge=1, le=10, description="tries per model call before a step fails")
    top_k: int = Field(4, ge=0, le=32, description="long-term memories retrieved per step")
    stream_timeout: float = Field(120.0, gt=0, description="seconds without a new token before giving up")
    ditto: bool = Field(True, description="write with the DITTO adapter when there is one (off: the base model)")
    ditto_adapter: Path | None = Field(None, description="a DITTO LoRA adapter folder; default: the one in assets/ "
                                       "for the embedded model")
    pause_adapter: Path | None = Field(None, description="a [PAUSE]-tuned adapter (storyloom sca pause-tune): "
                                       "prompts get pauses at their boundaries; DITTO stays folded in")
    guard: bool = Field(True, description="new stories decode with the sentence-repetition guard")
    guard_lambda: float = Field(0.01, gt=0, le=1, description="the guard's lambda: a sentence seen k times "
                                "is continued with its probability times lambda**k")
    max_premise_chars: int = 4000
    max_draft_paragraphs: int = Field(20_000, ge=1, description="paragraphs of a draft one import takes")
    max_draft_words: int = Field(1_000_000, ge=1, description="words of a draft one import takes")
    max_backup_bytes: int = Field(200_000_000, ge=1, le=500_000_000, description="bytes of a JSON backup one "
                                  "import takes (reading one needs a few times its size in memory)")
    max_plan_chars: int = 2000

    @property
    def model_writers(self) -> int:
        """STORYLOOM_WRITERS, or its default: as many as decode together, or one at a time."""
        if self.writers:
            return self.writers
        return self.max_batch if self.backend == "local" and self.batching else 1

    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return sqlite_url(self.data_dir / "storyloom.db")
