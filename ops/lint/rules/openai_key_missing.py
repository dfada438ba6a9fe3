"""The LiteLLM key (the upstream-key credential) is missing, empty or a placeholder.

Why: the proxy calls LiteLLM with the key in /etc/optillm-proxy/upstream-key, delivered by
LoadCredential=upstream-key (the launcher hands it to its upstream client in-process; the env
file's OPENAI_API_KEY is no longer read). Without the file systemd cannot hand it over, and the
launcher refuses to start (exit 78) when the key is empty, more than one word, or still the
placeholder replace-with-the-litellm-key an earlier install wrote. Lint calls the launcher's own
checks (optillm_proxy_launcher.settings), so the message is the launcher's. The ID predates the
credential: it is the same fact, the LiteLLM key being absent.

Fails:
    /etc/optillm-proxy/upstream-key does not exist
    replace-with-the-litellm-key          (the file's only line)

Passes:
    sk-litellm-virtual-key                (the file's only line, root 0600)

Fix: write the LiteLLM virtual key for this proxy to /etc/optillm-proxy/upstream-key (one line,
chmod 0600), then `systemctl restart optillm-proxy` (or re-run `sudo ./install.sh`: it starts the
service once the key is there).
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import REFUSES

ID = "openai-key-missing"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable
INPUT = "upstream-key-file"


def check(ctx):
    text = ctx.upstream_key_text
    path = ctx.inputs.upstream_key_file
    name, hint, what = (settings.UPSTREAM_CREDENTIAL_NAME, settings.UPSTREAM_KEY_FILE_HINT,
                        settings.UPSTREAM_KEY_WHAT)
    if text is None:
        if ctx.is_missing(INPUT):  # else unreadable: file-unreadable says so
            yield Problem(str(path), 0, "the service will not start: "
                                        f"{settings.credential_missing(path, name, hint, what)}")
        return
    try:
        settings.check_upstream_key(settings.check_key_text(text, path, hint, what))
    except settings.ConfigRefused as exc:
        line = 2 if "\n" in text.strip() else 1
        yield Problem(str(path), line, REFUSES + str(exc))
