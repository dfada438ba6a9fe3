"""The request policy: what a chat completion body may ask of optillm, decided before optillm sees it.

optillm 0.3.12 lets any caller pick the approach in-band (a `<optillm_approach>` tag in any
message, an `optillm_approach` field), rewrite global server settings (`mcts_*` fields), run
combined approaches (`a&b-model`, `a|b-model`), and crashes with a 500 and a traceback on bodies
it does not expect. Here the approach comes from the model name's prefix only, from an allow-list,
and a body is refused, never silently rewritten. Each refusal names its rule.

Stdlib only: unit tests and `opsctl lint --explain` read it without optillm.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable

from optillm_proxy_launcher.settings import APPROACHES_VARIABLE, RequestSettings

TAG = "<optillm_approach>"
# Fields 0.3.12's proxy() reads for itself rather than passing upstream.
APPROACH_FIELD = "optillm_approach"
SERVER_CONFIG_FIELDS = ("mcts_depth", "mcts_exploration", "mcts_simulations")
# openai-python's create() takes these as client options, not request fields: `timeout` would
# replace the upstream timeout, `extra_headers`/`extra_body` would reach LiteLLM unchecked.
CLIENT_OPTIONS = frozenset({"timeout", "extra_headers", "extra_query", "extra_body"})
# Roles whose content optillm may read as text (None content crashes it for system/user).
NULL_CONTENT_ROLES = ("assistant", "tool", "function")
MODEL_CHARS = 200  # a model name kept for the record is cut here (it is the client's text)
# Deeper JSON than any chat completion needs (tool schemas included); far below the depth at which
# parsing or re-encoding the body (ours, optillm's, openai-python's) runs out of stack.
MAX_JSON_DEPTH = 64
# What every OpenAI-compatible backend takes as an integer: a signed 64-bit one.
MAX_INT = 2**63 - 1

# Rule names, as they appear in the error's `code`, in the records and in docs/request-path.md.
# The first five are routes.py's: which requests reach optillm's views at all.
RULES = {
    "unknown-route": "a path this proxy does not serve (HTTP 404)",
    "method-not-allowed": "a method the route does not serve, HEAD and OPTIONS included (HTTP 405)",
    "method-not-canonical": "the route's method in other letter case, e.g. `post` (HTTP 400)",
    "target-not-canonical": "a route's path spelled otherwise: percent-encoded, repeated or trailing slashes, "
                            "dot segments, an absolute-form target (HTTP 400)",
    "invalid-host": "a Host header that is not a host name (HTTP 400)",
    "malformed-request": "the request line or a header is not HTTP/1.1 as the server parses it: a method not in "
                         "capitals (`post`), a Content-Length that is not a number; answered by the server (HTTP 400)",
    "headers-too-large": "the request's headers are larger than the server accepts (HTTP 431)",
    "body-too-large": "the body is larger than MAX_REQUEST_BYTES (HTTP 413)",
    "unsupported-media-type": "the body is not sent as application/json (HTTP 415)",
    "malformed-json": "the body is not valid UTF-8 JSON (HTTP 400)",
    "nesting-too-deep": f"the JSON nests deeper than {MAX_JSON_DEPTH} levels (HTTP 400)",
    "invalid-body": "the body or one of its fields does not have the shape a chat completion needs: a wrong "
                    "type, a null model, a number out of range, an unpaired surrogate (HTTP 400)",
    "unknown-field": "a field that is not a chat completion parameter, or a client option (HTTP 400)",
    "approach-field": f"the `{APPROACH_FIELD}` field picks an approach in-band (HTTP 400)",
    "approach-tag": f"a `{TAG}` tag in a message picks an approach in-band (HTTP 400)",
    "server-config-field": "an `mcts_*` field would rewrite optillm's global settings for every later request (HTTP 400)",
    "combined-approach": f"`a&b-model` / `a|b-model` is not listed in {APPROACHES_VARIABLE} (HTTP 400)",
    "multiple-approaches": "more than one approach prefix (`moa-bon-model`); optillm would run only the first (HTTP 400)",
    "approach-not-allowed": f"the model's approach prefix is not in {APPROACHES_VARIABLE} (HTTP 400)",
    "no-base-model": "an approach prefix with no base model after it (HTTP 400)",
    "n-out-of-range": "`n` is above MAX_N: a strategy runs its whole pipeline n times (HTTP 400)",
}


@dataclass(frozen=True)
class Refusal:
    status: int
    rule: str
    message: str
    model: str = ""  # what the client named, bounded (for the record), when the body could be read
    headers: tuple[tuple[str, str], ...] = ()  # e.g. Allow, with a 405

    def body(self) -> bytes:
        return json.dumps({"error": {
            "message": f"refused by optillm-proxy policy ({self.rule}): {self.message}",
            "type": "invalid_request_error",
            "code": self.rule,
        }}).encode()


@dataclass(frozen=True)
class Verdict:
    """An accepted body: the parsed JSON and the approach(es) its model name selects."""

    body: dict
    approach: str  # "none" for the base model, "a&b" for a combined one
    base_model: str = ""  # "" when the body names no model (optillm uses its --model)
    model: str = ""  # what the client named, bounded (for the record)


@dataclass(frozen=True)
class Policy:
    settings: RequestSettings
    # optillm's own names: server.known_approaches, the loaded plugins and every bundled slug
    # (an unloaded slug would otherwise pass upstream as a model name and loop back here).
    approach_names: frozenset[str]
    request_fields: frozenset[str]  # what openai's create() accepts as request fields

    def check(self, raw: bytes, content_type: str | None) -> Verdict | Refusal:
        if content_type is None or content_type.split(";", 1)[0].strip().lower() != "application/json":
            shown = "missing" if content_type is None else repr(content_type[:100])
            return Refusal(415, "unsupported-media-type",
                           f"Content-Type is {shown}; send the body as application/json")
        try:
            body = json.loads(raw.decode("utf-8"), parse_int=_bounded_int, parse_float=_finite_float,
                              parse_constant=_no_constant)
        except _OutOfRange as exc:
            return Refusal(400, "invalid-body", f"the number {exc} is out of range (integers up to 2**63-1, "
                                                "finite floats)")
        except RecursionError:
            return Refusal(400, "nesting-too-deep", f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
        except (UnicodeDecodeError, ValueError) as exc:
            return Refusal(400, "malformed-json", f"the body is not valid JSON ({type(exc).__name__})")
        if not isinstance(body, dict):
            return Refusal(400, "invalid-body", "the body must be a JSON object")
        if _depth_over(body, MAX_JSON_DEPTH):
            return Refusal(400, "nesting-too-deep", f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
        if SURROGATE_ESCAPE.search(raw) and any(SURROGATE.search(text) for text in _strings(body)):
            return Refusal(400, "invalid-body", "a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), "
                                                "which is no character: send valid Unicode")
        verdict = (self._fields(body) or self._messages(body.get("messages")) or self._numbers(body)
                   or self._model(body))
        model = body.get("model")
        return replace(verdict, model=model[:MODEL_CHARS]) if isinstance(model, str) else verdict

    # -- fields ---------------------------------------------------------------------------------

    def _fields(self, body: dict) -> Refusal | None:
        if APPROACH_FIELD in body:
            return Refusal(400, "approach-field", f"the approach comes from the model name's prefix only; "
                                                  f"remove the {APPROACH_FIELD!r} field")
        config = [k for k in SERVER_CONFIG_FIELDS if k in body]
        if config:
            return Refusal(400, "server-config-field", f"{', '.join(config)} would change optillm's settings for "
                                                       "every later request; remove them")
        unknown = sorted(k for k in body if k not in self.request_fields or k in CLIENT_OPTIONS)
        if unknown:
            return Refusal(400, "unknown-field", f"{', '.join(map(repr, unknown[:5]))} "
                                                 f"{'is not a chat completion field' if len(unknown) == 1 else 'are not chat completion fields'}")
        return None

    def _messages(self, messages: Any) -> Refusal | None:
        if not isinstance(messages, list) or not messages:
            return Refusal(400, "invalid-body", "'messages' must be a non-empty list")
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(message, dict):
                return Refusal(400, "invalid-body", f"{where} must be an object")
            role = message.get("role")
            if not isinstance(role, str) or not role:
                return Refusal(400, "invalid-body", f"{where}.role must be a string")
            if "content" not in message:
                return Refusal(400, "invalid-body", f"{where} has no 'content'")
            problem = _content_problem(message["content"], role)
            if problem:
                return Refusal(400, "invalid-body", f"{where}.content {problem}")
            if any(TAG in text for text in _strings(message)):
                return Refusal(400, "approach-tag", f"{where} ({role}) carries a {TAG} tag; the approach comes "
                                                    "from the model name's prefix only: remove the tag")
        return None

    def _numbers(self, body: dict) -> Refusal | None:
        checks = (("stream", bool, False), ("n", int, False), ("max_tokens", int, True),
                  ("max_completion_tokens", int, True), ("temperature", (int, float), True),
                  ("top_p", (int, float), True))
        for name, kind, nullable in checks:
            if name not in body or (nullable and body[name] is None):
                continue
            value = body[name]
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                return Refusal(400, "invalid-body", f"{name!r} must be {_kind_name(kind)}")
            if kind is int and value < 1:
                return Refusal(400, "invalid-body", f"{name!r} must be at least 1")
        if "response_format" in body and not isinstance(body["response_format"], (dict, type(None))):
            return Refusal(400, "invalid-body", "'response_format' must be an object")
        # The proxy honours stream_options itself (usage.py), so their shape is checked here.
        options = body.get("stream_options")
        if options is not None and (not isinstance(options, dict)
                                    or not isinstance(options.get("include_usage", False), bool)):
            return Refusal(400, "invalid-body", "'stream_options' must be an object whose 'include_usage' "
                                                "is true or false")
        n = body.get("n", 1)
        if n > self.settings.max_n:
            return Refusal(400, "n-out-of-range", f"n={n} is above this proxy's MAX_N={self.settings.max_n}")
        return None

    # -- the model name ---------------------------------------------------------------------------

    def _model(self, body: dict) -> Verdict | Refusal:
        if "model" not in body:
            return Verdict(body, "none")  # optillm uses its --model: the base model
        model = body["model"]
        if not isinstance(model, str) or not model.strip():
            # A null model is not "no model" to 0.3.12: it builds the approach from None and fails.
            return Refusal(400, "invalid-body", "'model' must be a non-empty string (leave the field out for "
                                                "the proxy's default model)")
        prefixes, base = self.split_model(model)
        if not prefixes:
            return Verdict(body, "none", model)
        if len(prefixes) > 1:
            return Refusal(400, "multiple-approaches", f"model {model!r} names {len(prefixes)} approach prefixes "
                                                       f"({', '.join(prefixes)}); name one")
        [approach] = prefixes
        if not base:
            return Refusal(400, "no-base-model", f"model {model!r} names no base model after its approach prefix")
        if approach == "none":
            return Verdict(body, "none", base)
        if approach in self.settings.approaches:
            return Verdict(body, approach, base)
        allowed = ", ".join(sorted(self.settings.approaches)) or "none (base model only)"
        if "&" in approach or "|" in approach:
            return Refusal(400, "combined-approach", f"model {model!r} combines approaches ({approach}), which "
                                                     f"{APPROACHES_VARIABLE} does not list; allowed: {allowed}")
        return Refusal(400, "approach-not-allowed", f"model {model!r} asks for approach {approach!r}, which "
                                                    f"{APPROACHES_VARIABLE} does not allow; allowed: {allowed}")

    def split_model(self, model: str) -> tuple[list[str], str]:
        """The approach prefixes 0.3.12's parse_combined_approach would take from `model`, and the rest."""
        parts = model.split("-")
        prefixes: list[str] = []
        for i, part in enumerate(parts):
            if part in self.approach_names or "&" in part or "|" in part:
                prefixes.append(part)
            else:
                return prefixes, "-".join(parts[i:])
        return prefixes, ""


def _content_problem(content: Any, role: str) -> str | None:
    if isinstance(content, str):
        return None
    if content is None:
        return None if role in NULL_CONTENT_ROLES else f"must not be null for role {role!r}"
    if not isinstance(content, list):
        return "must be a string or a list of parts"
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            return f"[{j}] must be an object"
        if part.get("type") == "text" and not isinstance(part.get("text"), str):
            return f"[{j}] is a text part without a string 'text'"
    return None


def _strings(value: Any) -> Iterable[str]:
    """Every string inside a JSON value (keys included), depth-first."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class _OutOfRange(ValueError):
    pass


def _bounded_int(text: str) -> int:
    # Checked on the text first: int() of thousands of digits is slow, and refused past 4300.
    if len(text.lstrip("-")) > 19 or abs(value := int(text)) > MAX_INT:
        raise _OutOfRange(text[:30] + ("..." if len(text) > 30 else ""))
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfRange(text[:30])
    return value


def _no_constant(text: str):
    raise ValueError(f"{text} is not JSON")


# Only a body with a \uD800-\uDFFF escape can hold a lone surrogate (raw UTF-8 cannot encode one);
# a valid pair decodes to one character, so any surrogate left after parsing is unpaired.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
SURROGATE = re.compile("[\ud800-\udfff]")


def _depth_over(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _kind_name(kind) -> str:
    return {bool: "true or false", int: "an integer"}.get(kind, "a number")
