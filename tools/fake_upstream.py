"""A recording OpenAI-compatible upstream: answers chat completions and /v1/models, remembers calls.

Stdlib only, so it runs anywhere a python3 does (tests, demos, the test box). Each call is kept
as {"path", "model", "n", "fields", "authorization", "peer", "headers", "usage"} (`fields`: the body's
keys; `usage`: what the answer reported, null for a failed call); GET /_calls lists them, POST /_reset forgets them,
POST /_status {"status": 500} makes chat completions fail with that status until reset (with
"times": N, only the next N of them; with "quote_authorization": true the error message quotes the
Authorization header and its token back, as LiteLLM 1.80.11's 401 for an unknown key does:
`Received API Key = ..., Key Hash (Token) =...`), and
POST /_delay {"seconds": 2.5} makes each chat completion wait that long first (a slow or hung
LiteLLM) until reset.

Simulated accuracy (opt-in, for `opsctl eval`'s demonstration; not a model): POST /_simulate
{"p": 0.6, "seed": 7, "wrong_values": 4, "tasks": [<task-file objects>]} makes each chat completion
whose messages contain a task's prompt answer each of its `n` choices "The answer is X." with X the
task's answer with probability p, else one of `wrong_values` wrong values, each equally likely
(numbers: the answer + 1, + 2, ...; option letters: other letters; strings: `not-<answer>-1`, ...;
regex tasks have no answer to give and are not simulated). The draw is a hash of (seed, the task's
prompt, how many calls that prompt had before, the choice index): a run is reproducible whatever the
concurrency, as long as the same prompt is not asked twice at once. Usage counts ~4 characters per
token. Other calls, and every call without /_simulate, get the default answer. /_reset ends it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = "The answer is 42."
TOKENS_PER_CHOICE = 7


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict] = []
        self.fail_status: int | None = None
        self.fail_times: int | None = None  # None: every call fails while fail_status is set
        self.quote_authorization = False
        self.delay_seconds: float = 0.0
        self.release = threading.Event()  # set by /_reset: delayed answers stop waiting
        self.simulation: Simulation | None = None


_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def _number(value) -> float | None:
    """A task answer as a number, as ops.eval.tasks.as_number reads it. Not imported from there:
    this file also runs alone, inside a runtime venv without `ops` (tools/lean_probe.py)."""
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        value = float(text) if _NUMBER.fullmatch(text) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _show(x: float) -> str:
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else f"{x:.10g}"


def _values(task: dict, wrong_values: int) -> tuple[str, list[str]] | None:
    """The right value and the wrong ones a simulated sample answers for a task, or None."""
    answer, scorer = task.get("answer"), task.get("scorer")
    if not isinstance(answer, (str, int, float)) or isinstance(answer, bool) or scorer == "regex":
        return None
    number = _number(answer)
    if scorer == "numeric" or (scorer is None and number is not None):
        if number is None:
            return None
        tolerance = task.get("tolerance") or 0
        step = 1 if tolerance < 0.5 else math.ceil(2 * tolerance + 1)
        return _show(number), [_show(number + step * (j + 1)) for j in range(wrong_values)]
    right = str(answer).strip()
    if scorer == "choice":
        right = right.upper()
        letters = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != right]
        return right, letters[:wrong_values]
    return right, [f"not-{right}-{j + 1}" for j in range(wrong_values)]


def _texts(messages) -> list[str]:
    texts = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return texts


class Simulation:
    """Each sample right with probability p (see the module's docstring)."""

    def __init__(self, p: float, seed: int, wrong_values: int, tasks: list) -> None:
        if not 0 <= p <= 1 or wrong_values < 1:
            raise ValueError("need 0 <= p <= 1 and wrong_values >= 1")
        self.p, self.seed, self.wrong_values = p, seed, wrong_values
        self.by_prompt: dict[str, tuple[str, list[str]]] = {}
        for task in tasks:
            prompt = task.get("prompt") if isinstance(task, dict) else None
            values = _values(task, wrong_values) if isinstance(prompt, str) and prompt.strip() else None
            if values:
                self.by_prompt[prompt] = values
        self.longest_first = sorted(self.by_prompt, key=len, reverse=True)
        self.counters: dict[str, int] = {}
        self.lock = threading.Lock()

    def find(self, texts: list[str]) -> str | None:
        for text in texts:
            if text in self.by_prompt:
                return text
        joined = "\n".join(texts)
        return next((prompt for prompt in self.longest_first if prompt in joined), None)

    def answers(self, prompt: str, n: int) -> list[str]:
        with self.lock:
            call = self.counters.get(prompt, 0)
            self.counters[prompt] = call + 1
        right, wrong = self.by_prompt[prompt]
        out = []
        for i in range(n):
            digest = hashlib.sha256(f"{self.seed}\0{prompt}\0{call}\0{i}".encode()).digest()
            u = int.from_bytes(digest[:8], "big") / 2 ** 64
            value = right if u < self.p else wrong[int.from_bytes(digest[8:16], "big") % len(wrong)]
            out.append(f"The answer is {value}.")
        return out


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-upstream/1"
    # Keep-alive, as LiteLLM (uvicorn) does: a client that reuses its connections shows it in the
    # `peer` of its calls. Every answer carries Content-Length, so HTTP/1.1 framing is exact.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, a reused connection stalls ~40 ms on
    # the client's delayed ACK. uvicorn sets TCP_NODELAY too.
    disable_nagle_algorithm = True
    state: _State  # set on the subclass made per server

    def log_message(self, fmt, *args):  # quiet: tests read /_calls, not stderr
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _record(self, body: dict) -> dict:
        call = {
            "path": self.path,
            "model": body.get("model"),
            "n": body.get("n", 1),
            "fields": sorted(body),
            "authorization": self.headers.get("Authorization"),
            "peer": self.client_address[1],  # the caller's port: one per connection it opened
            "headers": sorted(k.lower() for k in self.headers.keys()),
            "usage": None,
        }
        with self.state.lock:
            self.state.calls.append(call)
        return call

    def _answer(self, call: dict, body: dict) -> None:
        """A chat completion answer, its usage kept in the call's record."""
        with self.state.lock:
            call["usage"] = body["usage"]
        self._send(200, body)

    def do_GET(self):
        if self.path == "/_calls":
            with self.state.lock:
                return self._send(200, list(self.state.calls))
        if self.path.rstrip("/").endswith("/models"):
            self._record({})
            return self._send(200, {"object": "list", "data": [
                {"id": "jerry-xl", "object": "model", "created": 0, "owned_by": "fake-upstream"}]})
        if self.path == "/health":
            return self._send(200, {"status": "ok"})
        return self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        body = self._body()
        if self.path == "/_reset":
            with self.state.lock:
                self.state.calls.clear()
                self.state.fail_status = None
                self.state.fail_times = None
                self.state.quote_authorization = False
                self.state.delay_seconds = 0.0
                self.state.simulation = None
                self.state.release.set()
                self.state.release = threading.Event()
            return self._send(200, {"reset": True})
        if self.path == "/_status":
            with self.state.lock:
                self.state.fail_status = body.get("status")
                self.state.fail_times = body.get("times")
                self.state.quote_authorization = bool(body.get("quote_authorization"))
            return self._send(200, {"status": body.get("status")})
        if self.path == "/_simulate":
            try:
                simulation = Simulation(float(body.get("p", 0.6)), int(body.get("seed", 0)),
                                        int(body.get("wrong_values", 4)), list(body.get("tasks") or []))
            except (TypeError, ValueError) as exc:
                return self._send(400, {"error": {"message": f"bad /_simulate body: {exc}"}})
            with self.state.lock:
                self.state.simulation = simulation
            return self._send(200, {"simulating": len(simulation.by_prompt), "p": simulation.p,
                                    "seed": simulation.seed, "wrong_values": simulation.wrong_values})
        if self.path == "/_delay":
            with self.state.lock:
                self.state.delay_seconds = float(body.get("seconds") or 0)
            return self._send(200, {"seconds": self.state.delay_seconds})
        if self.path.rstrip("/").endswith("/chat/completions"):
            call = self._record(body)
            with self.state.lock:
                delay, release = self.state.delay_seconds, self.state.release
            if delay:
                release.wait(delay)
            with self.state.lock:
                fail = self.state.fail_status if self.state.fail_times != 0 else None
                if fail and self.state.fail_times:
                    self.state.fail_times -= 1
                quote = self.state.quote_authorization
            if fail:
                message = "injected failure"
                if quote:
                    received = self.headers.get("Authorization") or ""
                    message = ("Authentication Error, Invalid proxy server token passed. Received API Key = "
                               f"{received}, Key Hash (Token) ={received.split(' ', 1)[-1]}. Unable to find "
                               "token in cache or `LiteLLM_VerificationTokenTable`")
                return self._send(fail, {"error": {"message": message}})
            n = int(body.get("n") or 1)
            simulation = self.state.simulation
            if simulation is not None:
                texts = _texts(body.get("messages"))
                prompt = simulation.find(texts)
                if prompt is not None:
                    return self._simulated(call, body, simulation.answers(prompt, n), texts)
            choices = [{"index": i, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": ANSWER}} for i in range(n)]
            return self._answer(call, {
                "id": f"chatcmpl-fake-{time.monotonic_ns()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": choices,
                "usage": {"prompt_tokens": 10, "completion_tokens": TOKENS_PER_CHOICE * n,
                          "total_tokens": 10 + TOKENS_PER_CHOICE * n},
            })
        return self._send(404, {"error": {"message": f"no route {self.path}"}})

    def _simulated(self, call: dict, body: dict, answers: list[str], texts: list[str]) -> None:
        prompt_tokens = max(1, math.ceil(sum(len(t) for t in texts) / 4))
        completion_tokens = sum(math.ceil(len(a) / 4) for a in answers)
        return self._answer(call, {
            "id": f"chatcmpl-sim-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": a}}
                        for i, a in enumerate(answers)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog is 5: a strategy burst opens hundreds of connections at once.
    request_queue_size = 1024


def make_server(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"state": _State()})
    return _Server((host, port), handler)


def serve(host: str, port: int, simulation: Simulation | None = None) -> None:
    server = make_server(host, port)
    server.RequestHandlerClass.state.simulation = simulation
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _main(argv: list[str]) -> None:
    """python -m tools.fake_upstream PORT [--simulate TASKS.jsonl [--p 0.6] [--seed 7] [--wrong-values 4]]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.fake_upstream", description=__doc__.split("\n\n")[0])
    # No default port: stdlib only (tools/lean_probe.py loads this file into a bare runtime), so
    # it cannot read layout.env; callers pass LiteLLM's port from there (the bench scripts do).
    parser.add_argument("port", type=int)
    parser.add_argument("--simulate", metavar="TASKS", help="answer this task file's prompts right with probability --p")
    parser.add_argument("--p", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--wrong-values", type=int, default=4)
    args = parser.parse_args(argv)
    simulation = None
    if args.simulate:
        tasks = []
        with open(args.simulate, encoding="utf-8") as stream:
            for line in stream:
                try:
                    tasks.append(json.loads(line))
                except ValueError:
                    continue
        simulation = Simulation(args.p, args.seed, args.wrong_values, tasks)
    serve("127.0.0.1", args.port, simulation)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
