"""A model behind an OpenAI-compatible server: vLLM on GPUs, Hugging Face's `transformers serve`,
or any server that speaks the OpenAI API.

Two ways to ask:

- `completions` (the default when storyloom knows the model's tokenizer, `tokenizer=`): the prompt
  is rendered here with the model's own chat template, and the reply's required start
  (`reply_prefix`, e.g. "Next,") is written into it, exactly as the local backend does;
- `chat`: the server renders the messages; a required start is asked for in words and cut off the
  reply when the model writes it.

Streaming, a timeout between tokens, and the client's bounded retries with exponential backoff for
connection errors, 429 and 5xx answers. The server's errors become one clear message each.

What a server cannot give: the model's logits (the sentence-repetition guard, DRY, banned first
words) and gradients (SCA's Integrated Gradients). Requests carry those settings; this backend
leaves them out and says so in `limits`. DITTO is the server's: weights with it merged in
(`storyloom model-folder`), or vLLM's LoRA module served under its own name; with `base_model`
(the served name without it) a story whose DITTO is off asks for that instead. The repetition penalty is left out too:
it is not in the OpenAI API, and `transformers serve` refuses a request with a field it does not
know."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

from common.errors import GenerationFailed, InvalidInput, ModelUnavailable
from generation.backend import Request
from generation.local import resolve_model

APIS = ("chat", "completions")
LIMITS = ("the sentence-repetition guard, DRY, the repetition penalty and banned first words need the model's "
          "logits, which a server does not give; DITTO is in the served model or not (a merged folder, or a LoRA "
          "module served by name); clarify's Integrated Gradients come from the embedded model in this process")


class OpenAIBackend:
    """Generation through an OpenAI-compatible server; `tokenizer` (a local model folder or GGUF,
    as for STORYLOOM_MODEL) gives exact prompts and token counts. Text only: no logits, no
    gradients (`limits`)."""

    exposes_logits = False
    gradients = None

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 3, api: str | None = None, tokenizer: str | None = None,
                 base_model: str | None = None):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise InvalidInput(f"the model server's base URL must start with http:// or https://, got {base_url!r}")
        if not model:
            raise InvalidInput("name the server's model (STORYLOOM_OPENAI_MODEL)")
        if api not in (None, *APIS):
            raise InvalidInput(f"the API must be chat or completions, got {api!r}")
        if api == "completions" and not tokenizer:
            raise InvalidInput("the completions API needs the model's tokenizer (STORYLOOM_OPENAI_TOKENIZER) to "
                               "render its chat template")
        if not 0 <= retries <= 10 or timeout <= 0:
            raise InvalidInput("retries must be 0 to 10 and the timeout positive")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.base_model = base_model  # the same model without DITTO, for stories that turn it off
        self.api = api or ("completions" if tokenizer else "chat")
        self.name = f"{model} at {self.base_url} (OpenAI API, {self.api})"
        self.limits = LIMITS
        self.timeout = timeout
        self.retries = retries
        self._api_key = api_key or "none"  # servers without keys still want the header
        self._tokenizer_spec = tokenizer
        self._tokenizer = None
        self._client = None

    # --- the pieces, made on first use ------------------------------------------------------------

    def client(self):
        if self._client is None:
            import httpx
            import openai

            self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=self.retries,
                                         timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)))
        return self._client

    def tokenizer(self):
        if self._tokenizer is None and self._tokenizer_spec:
            from transformers import AutoTokenizer

            source = resolve_model(self._tokenizer_spec)
            kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(source.folder, local_files_only=True, **kwargs)
            except (OSError, ValueError) as e:
                raise ModelUnavailable(f"cannot load the tokenizer {source}: {str(e).splitlines()[0]}") from e
        return self._tokenizer

    # --- the Backend protocol ---------------------------------------------------------------------

    def describe(self) -> str:
        if self.base_model:
            return (f"DITTO is the served model {self.model!r} (stories with DITTO off ask for {self.base_model!r}); "
                    f"no decode-time guard: {self.limits}")
        return f"no DITTO switch here and no decode-time guard: {self.limits}"

    def render(self, request: Request) -> str:
        """The prompt the model reads: exact with a tokenizer; otherwise the messages as sent."""
        tokenizer = self.tokenizer()
        if tokenizer is not None:
            return tokenizer.apply_chat_template(request.messages, tokenize=False,
                                                 add_generation_prompt=True) + request.reply_prefix
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self._chat_messages(request))

    def count_tokens(self, text: str) -> int:
        """Exact with a tokenizer; otherwise an estimate of 4 characters a token (English prose)."""
        tokenizer = self.tokenizer()
        if tokenizer is not None:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return math.ceil(len(text) / 4)

    def generate(self, request: Request) -> Iterator[str]:
        import openai

        try:
            stream = self._open(request)
        except openai.OpenAIError as e:
            raise self._problem(e) from e
        try:
            yield from self._read(stream, request)
        except openai.OpenAIError as e:
            raise self._problem(e) from e
        finally:
            stream.close()  # stops the server's generation when the caller stops reading

    # --- inside -----------------------------------------------------------------------------------

    def _chat_messages(self, request: Request) -> list[dict[str, str]]:
        if not request.reply_prefix:
            return request.messages
        last = request.messages[-1]
        ask = f'{last["content"]}\n\nBegin your reply with "{request.reply_prefix.strip()}".'
        return [*request.messages[:-1], {**last, "content": ask}]

    def _open(self, request: Request):
        plain = self.base_model and request.decoding is not None and not request.decoding.ditto
        common = {"model": self.base_model if plain else self.model, "max_tokens": request.max_new_tokens,
                  "stream": True, "temperature": request.temperature, "top_p": request.top_p}
        if request.seed is not None:
            common["seed"] = request.seed
        if self.api == "completions":
            return self.client().completions.create(prompt=self.render(request), **common)
        return self.client().chat.completions.create(messages=self._chat_messages(request), **common)

    def _read(self, stream, request: Request) -> Iterator[str]:
        finished = False
        start = request.reply_prefix.strip() if self.api == "chat" else ""
        held = ""  # the reply's first characters, while they may still be the required start
        try:
            for event in stream:
                if not event.choices:
                    continue
                choice = event.choices[0]
                text = (choice.text if self.api == "completions" else choice.delta.content) or ""
                finished = finished or choice.finish_reason is not None
                if start and held is not None:
                    held += text
                    if len(held.lstrip()) < len(start) and start.startswith(held.lstrip()):
                        continue  # not yet known whether the model wrote the start itself
                    text = held.lstrip()[len(start):] if held.lstrip().startswith(start) else held
                    held = None
                if text:
                    yield text
        except (json.JSONDecodeError, ValueError) as e:
            raise GenerationFailed(f"the model server at {self.base_url} sent a malformed reply ({e})") from e
        if start and held:
            yield held
        if not finished:
            raise GenerationFailed(f"the model server at {self.base_url} cut the reply off before its end")

    def _problem(self, e) -> Exception:
        """One clear message for each way a server fails."""
        import openai

        where = f"the model server at {self.base_url}"
        if isinstance(e, openai.APITimeoutError):
            return GenerationFailed(f"{where} did not answer within {self.timeout:g} s (after {self.retries} "
                                    "retries)")
        if isinstance(e, openai.APIConnectionError):
            return ModelUnavailable(f"cannot reach {where} (after {self.retries} retries): is it running?")
        if isinstance(e, openai.AuthenticationError):
            return ModelUnavailable(f"{where} refused the API key (STORYLOOM_OPENAI_API_KEY)")
        if isinstance(e, openai.PermissionDeniedError):
            return ModelUnavailable(f"{where} does not allow this API key to use {self.model}")
        if isinstance(e, openai.NotFoundError):
            return ModelUnavailable(f"{where} has no model {self.model!r} or no {self.api} endpoint "
                                    f"({_message(e)})")
        if isinstance(e, openai.APIStatusError):
            return GenerationFailed(f"{where} answered {e.status_code}: {_message(e)}")
        if isinstance(e, openai.APIResponseValidationError):
            return GenerationFailed(f"{where} sent a reply that is not the OpenAI format ({_message(e)})")
        return GenerationFailed(f"{where} failed: {_message(e)}")


def _message(e) -> str:
    """The server's own words from an API error's body, else the client's message."""
    import openai

    if not isinstance(e, openai.APIError):
        return str(e).splitlines()[0][:300]
    if isinstance(e.body, dict):
        inner = e.body.get("error", e.body.get("detail", e.body))
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if isinstance(inner, str):
            return inner[:300]
    return (str(e.message) or str(e)).splitlines()[0][:300]
