"""One structured record per request: native journald fields, never message content or a key.

Queryable as `journalctl -u optillm-proxy OPTILLM_PROXY_APPROACH=moa -o json`; `opsctl report`
reads them back. Written with cysystemd's `send` (sd_journal_send over the bundled libsystemd: the
documented native protocol, each field its own journal field, no text to parse). Chosen over
systemd-python (no wheels: it needs a compiler and libsystemd-dev on the host) and over writing
the datagram protocol by hand.

Where no journal is attached (JOURNAL_STREAM unset: tests, a shell), each record is one line
`optillm-proxy-record {json}` on stderr instead, with the same field names.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields as dataclass_fields
from typing import Callable, Mapping

PREFIX = "OPTILLM_PROXY_"
MARKER_FIELD = PREFIX + "RECORD"
MARKER_VALUE = "request"
STDERR_TAG = "optillm-proxy-record"
NO_APPROACH = "-"  # the approach of a request where none ran (refused, unauthenticated, not a chat)
SYSLOG_INFO = 6


@dataclass(frozen=True)
class Record:
    request_id: str
    method: str
    path: str
    model: str  # as the client asked ("" when absent or not a string)
    approach: str  # "none" for the base model; "-" when none ran (refused, unauthenticated, not a chat)
    base_model: str
    status: int
    duration_ms: int
    upstream_calls: int
    upstream_prompt_tokens: int
    upstream_completion_tokens: int
    upstream_errors: int
    upstream_retries: int
    deadline_hit: int  # 0 or 1
    upstream_timeout: int  # 0 or 1
    policy_rule: str  # the refusal's rule, "" when admitted
    error_code: str  # the JSON error's code the client got, "" on success
    # calls not sent after the request's first non-transient upstream answer (upstream.py)
    upstream_skipped: int = 0

    def journal_fields(self) -> dict[str, str]:
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in dataclass_fields(self)}

    def message(self) -> str:
        text = (f"{self.method} {self.path} model={self.model or '-'} approach={self.approach} "
                f"status={self.status} {self.duration_ms} ms upstream_calls={self.upstream_calls}")
        return text + (f" refused={self.policy_rule}" if self.policy_rule else "") + \
            (f" error={self.error_code}" if self.error_code and not self.policy_rule else "")


FIELD_NAMES = tuple(PREFIX + f.name.upper() for f in dataclass_fields(Record))


def journal_sender() -> Callable[[Record], None]:
    from cysystemd import journal

    def send(record: Record) -> None:
        journal.send(message=record.message(), priority=SYSLOG_INFO,
                     **{MARKER_FIELD: MARKER_VALUE}, **record.journal_fields())

    return send


def stderr_sender(stream=None) -> Callable[[Record], None]:
    def send(record: Record) -> None:
        payload = {MARKER_FIELD: MARKER_VALUE, **record.journal_fields()}
        print(f"{STDERR_TAG} {json.dumps(payload, sort_keys=True)}", file=stream or sys.stderr, flush=True)

    return send


def make_sender(setting: str, environ: Mapping[str, str]) -> Callable[[Record], None] | None:
    """`journal` (default): journald when the unit's output goes there, else stderr; `off`: none."""
    if setting == "off":
        return None
    if environ.get("JOURNAL_STREAM"):
        return journal_sender()
    return stderr_sender()
