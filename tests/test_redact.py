"""redact.py: no key and no bearer token reaches the process's stdout/stderr (the journal's source).

Fast tier. The invariant is stated with hypothesis over text around the secrets and over how the
text is cut into writes; the launcher's real output is checked in tests/test_upstream_errors_real.py.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import traceback

from hypothesis import given, settings as hsettings, strategies as st

from optillm_proxy_launcher import redact
from optillm_proxy_launcher.records import Record, stderr_sender

PROXY_KEY = "opx-proxy-key-0123456789abcdefABCDEF"
UPSTREAM_KEY = "litellm-master-9f8e7d6c5b4a39281706"
KEYS = {"proxy-key": PROXY_KEY, "upstream-key": UPSTREAM_KEY}
REDACTOR = redact.Redactor(KEYS)

# Any characters a key may hold (no whitespace: settings.check_key_text refuses it).
KEY_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=12, max_size=40)
TOKEN = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/="),
                min_size=8, max_size=40)
# Text around a secret: anything, and the words and signs the patterns look for.
AROUND = st.lists(st.text(max_size=6) | st.sampled_from(
    ["Bearer", "bearer ", " ", "\t", "Authorization:", "authorization=", "'", '"', ":", "=", "sk-", "Basic ",
     "token ", "[redacted]", "\n", "x"]), max_size=10).map("".join)


def bearer(token: str, style: int) -> str:
    return [f"Bearer {token}", f"Authorization: Bearer {token}", f"'authorization': 'Bearer {token}'",
            f'"Authorization":"bearer {token}"', f"authorization={token}", f"BEARER\t{token}",
            f"Key Hash (Token) ={token}", f"Received API Key = {token}", f"'api_key': '{token}'",
            f"token: {token}"][style]


def write_in_pieces(text: str, cuts: list[int], keys=KEYS) -> str:
    out = io.StringIO()
    stream = redact.RedactingStream(out, redact.Redactor(keys))
    points = sorted({c % (len(text) + 1) for c in cuts})
    for start, end in zip([0, *points], [*points, len(text)]):
        stream.write(text[start:end])
    stream.flush()
    return out.getvalue()


@hsettings(max_examples=150, deadline=None)
@given(before=AROUND, after=AROUND, which=st.sampled_from(sorted(KEYS)), newline=st.booleans(),
       cuts=st.lists(st.integers(0, 200), max_size=6))
def test_a_known_key_never_passes_whatever_surrounds_it_or_how_it_is_written(before, after, which, newline, cuts):
    key = KEYS[which]
    text = before + key + after + ("\n" if newline else "")
    written = write_in_pieces(text, cuts)
    assert PROXY_KEY not in written and UPSTREAM_KEY not in written
    assert f"[redacted {which}]" in written


@hsettings(max_examples=100, deadline=None)
@given(proxy=KEY_TEXT, upstream=KEY_TEXT, before=AROUND, after=AROUND, cuts=st.lists(st.integers(0, 200), max_size=4))
def test_keys_of_any_characters_are_redacted(proxy, upstream, before, after, cuts):
    keys = {"proxy-key": proxy, "upstream-key": upstream}
    written = write_in_pieces(f"{before}{upstream}{after}\n{proxy}", cuts, keys)
    assert upstream not in written and proxy not in written


@hsettings(max_examples=150, deadline=None)
@given(token=TOKEN, style=st.integers(0, 9), before=AROUND, after=AROUND,
       cuts=st.lists(st.integers(0, 200), max_size=6))
def test_any_bearer_token_or_authorization_dump_never_passes(token, style, before, after, cuts):
    # The token starts after a separator, as in any header dump or message.
    text = f"{before} {bearer(token, style)} {after}\n"
    written = write_in_pieces(text, cuts)
    assert token not in written.replace(before, "").replace(after, "")


@hsettings(max_examples=100, deadline=None)
@given(tail=st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-"), min_size=8, max_size=48),
       before=AROUND, after=AROUND)
def test_an_sk_key_never_passes(tail, before, after):
    written = write_in_pieces(f"{before} sk-{tail} {after}", [])
    assert f"sk-{tail}" not in written


def test_litellms_own_401_text_keeps_its_words_and_loses_the_key():
    text = (f"Error generating candidate 1: Error code: 401 - {{'error': {{'message': 'Authentication Error, "
            f"Invalid proxy server token passed. Received API Key = Bearer {UPSTREAM_KEY}, Key Hash (Token) "
            f"={UPSTREAM_KEY}. Unable to find token in cache'}}}}")
    assert REDACTOR(text) == text.replace(UPSTREAM_KEY, "[redacted upstream-key]")
    assert REDACTOR("curl -H 'Authorization: Bearer abc.def-123' -d x") == "curl -H 'Authorization: Bearer [redacted]' -d x"
    assert REDACTOR("nothing secret here: moa-jerry-xl 200 12 ms") == "nothing secret here: moa-jerry-xl 200 12 ms"


def test_lines_of_different_threads_never_mix_and_a_split_key_is_seen_whole():
    out = io.StringIO()
    stream = redact.RedactingStream(out, REDACTOR)
    half = len(UPSTREAM_KEY) // 2

    def writer(n):
        for _ in range(200):
            stream.write(f"t{n} Bearer ")
            stream.write(UPSTREAM_KEY[:half])
            stream.write(UPSTREAM_KEY[half:])
            stream.write(" end\n")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 800 and UPSTREAM_KEY[:half] not in out.getvalue()
    assert all(line.endswith("Bearer [redacted upstream-key] end") for line in lines)


def test_install_covers_print_logging_tracebacks_and_records(monkeypatch):
    """What install() puts in place holds for every writer that finds the stream after it."""
    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    redactor = redact.install(KEYS)
    assert isinstance(sys.stderr, redact.RedactingStream) and sys.stderr.inner is err
    redact.install(KEYS)  # twice: still one layer
    assert sys.stderr.inner is err
    handler = logging.StreamHandler()  # as logging.basicConfig at optillm's import makes it
    logger = logging.getLogger("test_redact.optillm")
    logger.addHandler(handler)
    try:
        print("upstream said", UPSTREAM_KEY)
        logger.error("Error generating candidate: Received API Key = Bearer %s", UPSTREAM_KEY)
        try:
            raise RuntimeError(f"Authorization: Bearer {PROXY_KEY}")
        except RuntimeError:
            logger.exception("failed")
            traceback.print_exc()
        stderr_sender()(Record("1", "POST", f"/v1/{PROXY_KEY}", f"Bearer {UPSTREAM_KEY}", "-", "", 400, 1,
                               0, 0, 0, 0, 0, 0, 0, "", ""))
        sent = []
        redact.redacting_sender(sent.append, redactor)(Record("1", "POST", "/", f"x{UPSTREAM_KEY}", "-", "", 400,
                                                              1, 0, 0, 0, 0, 0, 0, 0, "", ""))
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        logger.removeHandler(handler)
    written = err.getvalue() + out.getvalue()
    assert "Error generating candidate" in written and "RuntimeError" in written and "optillm-proxy-record" in written
    assert PROXY_KEY not in written and UPSTREAM_KEY not in written, written
    assert sent[0].model == "x[redacted upstream-key]"
