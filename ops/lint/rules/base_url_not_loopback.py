"""optillm's --base-url is missing or is not an http:// URL on loopback.

Why: --base-url is where every strategy's calls go (LiteLLM at http://127.0.0.1:4000/v1).
Without it stock optillm 0.3.12 calls OpenAI's public API (the launcher refuses to start); a
remote URL sends prompts and the LiteLLM key off the machine.

Fails:
    ExecStart=... --base-url https://api.example.com/v1 ...

Passes:
    ExecStart=... --base-url http://127.0.0.1:4000/v1 ...

Fix: `--base-url http://127.0.0.1:4000/v1` (the local LiteLLM).
"""

from ops.from_launcher import settings

from ops.from_launcher.layout import UPSTREAM_URL
from ops.lint.finding import ERROR, Problem
from ops.lint.netaddr import is_loopback_host, split_url
from ops.lint.rules._command import optillm_command
from ops.lint.rules._launcher import command_refusal

ID = "base-url-not-loopback"
SEVERITY = ERROR


def check(ctx):
    es = optillm_command(ctx)
    if es is None:
        return
    url = settings.base_url(es.command.args)
    d = es.directive
    missing = command_refusal(ctx, settings.check_base_url)
    if missing:  # without it stock optillm calls OpenAI's public API
        yield Problem(d.path, d.line, missing[1])
        return
    scheme, host, _ = split_url(url)
    if scheme != "http" or not is_loopback_host(host):
        yield Problem(d.path, d.line, f"--base-url {url} is not http:// on loopback; use the "
                                      f"local LiteLLM, {UPSTREAM_URL}")
