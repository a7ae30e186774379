"""The OpenAI-compatible backend against a scripted HTTP server, for each way a server fails: down,
slow, a wrong key, malformed JSON, a cut stream, a refused request, errors worth retrying. The real
server (`transformers serve` with the embedded model) is in test_serving.py."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from generation.backend import Request
from common.errors import GenerationFailed, ModelUnavailable
from generation.remote import OpenAIBackend
from common.errors import InvalidInput
from tests.fakes import QuietServer

ASK = Request(messages=[{"role": "user", "content": "Write about the sea."}], max_new_tokens=20)


class Script(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions and /v1/completions as the server's `mode` says."""

    def log_message(self, *args):  # quiet
        return

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append(body)
        mode = server.mode
        if mode == "unauthorized" or self.headers.get("Authorization") != "Bearer right-key":
            return self._json(401, {"error": {"message": "Incorrect API key provided", "type": "auth"}})
        if mode == "busy" and len(server.requests) <= server.failures:
            return self._json(503, {"error": {"message": "the engine is warming up"}})
        if mode == "refuse":
            return self._json(422, {"detail": "Unexpected fields in the request: {'bogus'}"})
        if mode == "slow":
            time.sleep(3)
        chat = self.path.endswith("/chat/completions")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if mode == "long":  # words until the client hangs up (or 10 s)
            return self._until_closed(chat, body)
        words = ["The", " sea", " was", " grey", "."]
        for n, word in enumerate(words):
            if mode == "cut" and n == 2:
                return  # the connection ends with no finish_reason
            if mode == "malformed" and n == 1:
                self.wfile.write(b"data: {this is not json\n\n")
                self.wfile.flush()
                return
            last = n == len(words) - 1
            piece = {"delta": {"content": word}} if chat else {"text": word}
            event = {"id": "x", "object": "chunk", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, **piece, "finish_reason": "stop" if last else None}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def _until_closed(self, chat, body):
        for n in range(500):
            piece = {"delta": {"content": " wave"}} if chat else {"text": " wave"}
            event = {"id": "x", "object": "chunk", "created": 0, "model": body["model"],
                     "choices": [{"index": 0, **piece, "finish_reason": None}]}
            try:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            except OSError:  # broken pipe or reset: the client closed the stream
                self.server.hung_up.append(n)
                return
            time.sleep(0.02)

    def _json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    httpd = QuietServer(("127.0.0.1", 0), Script)
    httpd.mode, httpd.requests, httpd.failures, httpd.hung_up = "ok", [], 0, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def backend(server, **kw) -> OpenAIBackend:
    options = {"api_key": "right-key", "timeout": 5.0, "retries": 2, **kw}
    return OpenAIBackend(f"http://127.0.0.1:{server.server_port}/v1", "story-model", **options)


def test_a_streamed_chat_reply_arrives_in_pieces(server):
    chunks = list(backend(server).generate(ASK))
    assert chunks == ["The", " sea", " was", " grey", "."]
    sent = server.requests[0]
    assert sent["stream"] is True and sent["model"] == "story-model" and sent["max_tokens"] == 20
    assert "repetition_penalty" not in sent  # not in the OpenAI API: transformers serve refuses it


def test_a_story_with_ditto_off_asks_for_the_served_base_model(server):
    """vLLM serves DITTO as a LoRA module under its own name beside the base model: the story's
    DITTO switch picks which one a request names."""
    from generation.backend import Decoding

    served = backend(server, base_model="smollm2-base")
    for decoding, name in ((Decoding(ditto=False), "smollm2-base"), (Decoding(), "story-model"), (None, "story-model")):
        list(served.generate(Request(messages=ASK.messages, max_new_tokens=20, decoding=decoding)))
        assert server.requests[-1]["model"] == name
    list(backend(server).generate(Request(messages=ASK.messages, decoding=Decoding(ditto=False))))
    assert server.requests[-1]["model"] == "story-model"  # no base model named: the one model there is
    assert "stories with DITTO off ask for 'smollm2-base'" in served.describe()


def test_a_required_start_is_asked_for_and_cut_off_in_chat(server):
    asked = Request(messages=ASK.messages, reply_prefix="The sea")
    assert "".join(backend(server).generate(asked)) == " was grey."
    assert server.requests[0]["messages"][-1]["content"].endswith('Begin your reply with "The sea".')


def test_stopping_early_closes_the_stream(server):
    server.mode = "long"
    chunks = backend(server).generate(ASK)
    assert next(chunks) == " wave"
    chunks.close()  # what the loop does when it has enough: no error, and the server sees it
    for _ in range(100):
        if server.hung_up:
            break
        time.sleep(0.05)
    assert server.hung_up and server.hung_up[0] < 400, "the server went on writing to a closed stream"


@pytest.mark.parametrize("mode, error, message", [
    ("unauthorized", ModelUnavailable, "refused the API key"),
    ("refuse", GenerationFailed, "answered 422: Unexpected fields in the request"),
    ("cut", GenerationFailed, "cut the reply off"),
    ("malformed", GenerationFailed, "malformed reply"),
])
def test_each_server_failure_is_one_clear_message(server, mode, error, message):
    server.mode = mode
    with pytest.raises(error, match=message):
        "".join(backend(server).generate(ASK))


def test_a_wrong_key_is_refused(server):
    with pytest.raises(ModelUnavailable, match="refused the API key"):
        "".join(backend(server, api_key="wrong").generate(ASK))
    assert len(server.requests) == 1  # a 401 is not retried


def test_a_busy_server_is_retried_with_backoff_a_bounded_number_of_times(server):
    server.mode, server.failures = "busy", 2
    assert "".join(backend(server, retries=2).generate(ASK)) == "The sea was grey."
    assert len(server.requests) == 3
    server.requests.clear()
    server.failures = 10
    with pytest.raises(GenerationFailed, match="answered 503: the engine is warming up"):
        "".join(backend(server, retries=2).generate(ASK))
    assert len(server.requests) == 3  # the first try and 2 retries, then the message


def test_a_slow_server_times_out(server):
    server.mode = "slow"
    started = time.monotonic()
    with pytest.raises(GenerationFailed, match="did not answer within 1 s"):
        "".join(backend(server, timeout=1.0, retries=0).generate(ASK))
    assert time.monotonic() - started < 3


def test_a_server_that_is_down_is_named():
    down = OpenAIBackend("http://127.0.0.1:9/v1", "story-model", timeout=2.0, retries=1)
    with pytest.raises(ModelUnavailable, match="cannot reach the model server at http://127.0.0.1:9/v1"):
        "".join(down.generate(ASK))


@pytest.mark.parametrize("kw, message", [
    ({"base_url": "localhost:8000"}, "must start with http"),
    ({"model": ""}, "name the server's model"),
    ({"api": "embeddings"}, "chat or completions"),
    ({"api": "completions"}, "needs the model's tokenizer"),
])
def test_bad_settings_are_refused_before_any_call(kw, message):
    options = {"base_url": "http://127.0.0.1:8000/v1", "model": "m", **kw}
    with pytest.raises(InvalidInput, match=message):
        OpenAIBackend(**options)


def test_without_a_tokenizer_counts_are_estimates_and_the_prompt_is_the_messages(server):
    b = backend(server)
    assert b.count_tokens("x" * 400) == 100
    assert b.render(ASK) == "[user]\nWrite about the sea."
    assert "logits" in b.describe()
    assert not b.exposes_logits and b.gradients is None  # text only
