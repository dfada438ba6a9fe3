"""The bad half of the corpus: each case breaks the good deployment in one way.

Case(id, rule, break_it, line, also): lint must report `rule` (at `line` when given) and
nothing outside {rule, *also}. Every rule has at least one case (test_every_rule_has_a_bad_case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tests.lint.deployment import Deployment

EXEC = "--host 127.0.0.1 --port 4020 --base-url http://127.0.0.1:4000/v1 --model jerry-xl"


@dataclass(frozen=True)
class Case:
    id: str
    rule: str
    break_it: Callable[[Deployment], None]
    line: int | None = None
    also: tuple[str, ...] = ()
    process_env: dict = field(default_factory=dict)


def flags(new: str) -> Callable[[Deployment], None]:
    return lambda d: d.replace("unit", EXEC, new)


def env_add(text: str) -> Callable[[Deployment], None]:
    return lambda d: d.append("env", text)


def litellm_add(text: str) -> Callable[[Deployment], None]:
    return lambda d: d.append("litellm", text)


def proxy_entry(name: str, model: str, api_base: str = "http://127.0.0.1:4020/v1") -> str:
    return (f"  - model_name: {name}\n    litellm_params:\n      model: {model}\n"
            f"      api_base: {api_base}\n")


def dists(**versions) -> Callable[[Deployment], None]:
    return lambda d: d.build_runtime(dists=versions)


def set_plugins(value: str) -> Callable[[Deployment], None]:
    return lambda d: d.replace("env", "PROXY_PLUGINS=majority_voting", f"PROXY_PLUGINS={value}")


CASES = [
    # socket unit
    Case("socket-bare-port", "socket-address",
         lambda d: d.replace("socket", "ListenStream=127.0.0.1:4020", "ListenStream=4020"), line=6),
    Case("socket-other-port", "socket-address",
         lambda d: d.replace("socket", "ListenStream=127.0.0.1:4020", "ListenStream=127.0.0.1:4021"), line=6),
    Case("socket-two-streams", "socket-address",
         lambda d: d.append("socket", "[Socket]\nListenStream=127.0.0.1:4022\n")),
    Case("socket-unit-deleted", "file-missing", lambda d: d.socket.unlink()),
    # inputs
    Case("env-file-deleted", "file-missing", lambda d: d.env_file.unlink()),
    Case("unit-deleted", "file-missing", lambda d: d.unit.unlink()),
    Case("litellm-config-deleted", "file-missing", lambda d: d.litellm_config.unlink()),
    Case("venv-manifest-deleted", "file-missing", lambda d: d.manifest.unlink()),
    Case("provider-yaml-bad-indent", "file-unreadable",
         lambda d: d.append("provider", "   bad: [\n"), line=7),
    Case("litellm-config-is-a-list", "file-unreadable", lambda d: d.write("litellm", "- a\n- b\n"),
         line=1),
    Case("env-file-not-utf8", "file-unreadable", lambda d: d.env_file.write_bytes(b"A=\xff\xfe\n")),
    # The launcher refuses an unreadable manifest: reported in its words, by the profile rule.
    Case("manifest-not-json", "plugin-not-in-profile", lambda d: d.write("manifest", "{profile: lean"), line=1),
    # environment
    Case("optillm-api-key-in-shell", "process-optillm-api-key", lambda d: None,
         process_env={"OPTILLM_API_KEY": "opx-whatever"}),
    Case("optillm-api-key-in-env-file", "optillm-api-key-configured",
         env_add("OPTILLM_API_KEY=opx-abc\n"), line=4),
    Case("optillm-api-key-in-unit", "optillm-api-key-configured",
         lambda d: d.replace("unit", "PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 OPTILLM_API_KEY=x"),
         line=12),
    Case("optillm-approach-in-env-file", "optillm-variable", env_add("OPTILLM_APPROACH=proxy\n"),
         line=4),
    Case("optillm-port-in-dropin", "optillm-variable",
         lambda d: d.dropin("10-env.conf", "[Service]\nEnvironment=OPTILLM_PORT=9000\n"), line=2),
    # env file
    Case("env-export", "env-syntax", env_add("export FOO=bar\n"), line=4),
    Case("env-inline-comment", "env-syntax",
         set_plugins("majority_voting  # the default"), line=3,
         # What systemd really passes: a plugin named "majority_voting  # the default".
         also=("proxy-plugins-unknown", "litellm-plugin-not-enabled", "litellm-routing-loop")),
    Case("env-no-equals", "env-syntax", env_add("JUST_A_WORD\n"), line=4),
    Case("env-text-after-quote", "env-syntax", env_add('FOO="bar" baz\n'), line=4),
    Case("env-quote-never-closed", "env-syntax", env_add('FOO="bar\n'), line=4),
    Case("env-key-twice", "env-syntax", env_add("PROXY_PLUGINS=majority_voting\n"), line=4),
    # the LiteLLM key: the upstream key file (LoadCredential=upstream-key), never the env file
    Case("upstream-key-file-deleted", "openai-key-missing", lambda d: d.upstream_key_file.unlink(),
         line=0),
    Case("upstream-key-empty", "openai-key-missing", lambda d: d.write("upstream", "\n"), line=1),
    Case("upstream-key-placeholder", "openai-key-missing",
         lambda d: d.write("upstream", "replace-with-the-litellm-key\n"), line=1),
    Case("upstream-key-two-words", "openai-key-missing",
         lambda d: d.write("upstream", "sk-litellm virtual-key\n"), line=1),
    Case("upstream-key-two-lines", "openai-key-missing",
         lambda d: d.write("upstream", "sk-litellm-virtual-key\nsk-another\n"), line=2),
    Case("openai-key-in-env-file", "upstream-key-in-env-file",
         env_add("OPENAI_API_KEY=sk-litellm-virtual-key-for-tests\n"), line=4),
    Case("openai-key-empty-in-env-file", "upstream-key-in-env-file", env_add("OPENAI_API_KEY=\n"),
         line=4),
    # An earlier install's env file, before install.sh moved the key: both facts, both said.
    Case("openai-key-not-yet-moved", "upstream-key-in-env-file",
         lambda d: d.upstream_key_file.unlink() or d.append("env", "OPENAI_API_KEY=sk-litellm\n"),
         line=4, also=("openai-key-missing",)),
    Case("openai-key-in-dropin", "upstream-key-in-env-file",
         lambda d: d.dropin("60-key.conf", "[Service]\nEnvironment=OPENAI_API_KEY=sk-litellm\n"),
         line=2),
    Case("cerebras-key-in-env-file", "other-provider-key", env_add("CEREBRAS_API_KEY=csk-for-tests\n"), line=4),
    Case("azure-key-in-dropin", "other-provider-key",
         lambda d: d.dropin("61-azure.conf", "[Service]\nEnvironment=AZURE_OPENAI_API_KEY=az-for-tests\n"),
         line=2),
    Case("upstream-retries-out-of-range", "request-settings", env_add("UPSTREAM_RETRIES=9\n"),
         line=4),
    Case("deadline-not-a-number", "request-settings", env_add("REQUEST_DEADLINE_SECONDS=abc\n"),
         line=4),
    Case("max-request-bytes-float", "request-settings", env_add("MAX_REQUEST_BYTES=1e6\n"), line=4),
    Case("max-n-zero", "request-settings", env_add("MAX_N=0\n"), line=4),
    Case("upstream-timeout-too-long", "request-settings",
         env_add("UPSTREAM_TIMEOUT_SECONDS=86400\n"), line=4),
    Case("approaches-unknown", "request-settings", env_add("PROXY_APPROACHES=moa,nosuch\n"), line=4),
    Case("approaches-plugin-not-enabled", "request-settings",
         env_add("PROXY_APPROACHES=moa,readurls\n"), line=4),
    Case("approaches-none-combined", "request-settings", env_add("PROXY_APPROACHES=none,moa\n"),
         line=4),
    Case("approaches-mixed-combination", "request-settings",
         env_add("PROXY_APPROACHES=moa&bon|plansearch\n"), line=4),
    Case("key-file-world-readable", "secret-file-mode", lambda d: d.key_file.chmod(0o644)),
    Case("env-file-group-readable", "secret-file-mode", lambda d: d.env_file.chmod(0o640)),
    Case("upstream-key-file-group-readable", "secret-file-mode",
         lambda d: d.upstream_key_file.chmod(0o640)),
    # unit
    Case("unit-assignment-before-section", "unit-syntax",
         lambda d: d.replace("unit", "[Unit]", "Description=x\n[Unit]"), line=2),
    Case("unit-missing-equals", "unit-syntax",
         lambda d: d.replace("unit", "Type=notify", "Type=notify\nNoNewPrivileges yes"), line=7),
    Case("unit-bad-section-header", "unit-syntax",
         lambda d: d.replace("unit", "[Install]", "[Install"),
         also=()),
    Case("dropin-adds-second-execstart", "exec-start",
         lambda d: d.dropin("20-exec.conf", "[Service]\nExecStart=/usr/bin/optillm --host 127.0.0.1\n"),
         line=2),
    Case("execstart-not-optillm", "exec-start",
         lambda d: d.replace("unit", "/opt/optillm-proxy/current/bin/python -I", "/usr/bin/env"),
         line=7),
    Case("execstart-broken-quotes", "exec-start", flags(EXEC + ' "unclosed'), line=7),
    Case("execstart-reset-to-nothing", "exec-start",
         lambda d: d.dropin("30-reset.conf", "[Service]\nExecStart=\n")),
    Case("host-all-interfaces", "host-not-loopback", flags(EXEC.replace("127.0.0.1 --port", "0.0.0.0 --port")),
         line=7, also=("socket-address",)),
    Case("host-missing", "host-not-loopback", flags(EXEC.replace("--host 127.0.0.1 ", ""))),
    Case("base-url-remote", "base-url-not-loopback",
         flags(EXEC.replace("http://127.0.0.1:4000/v1", "https://api.openai.com/v1"))),
    Case("base-url-https-loopback", "base-url-not-loopback",
         flags(EXEC.replace("http://127.0.0.1:4000/v1", "https://127.0.0.1:4000/v1"))),
    Case("base-url-missing", "base-url-not-loopback",
         flags(EXEC.replace(" --base-url http://127.0.0.1:4000/v1", "")),
         also=("litellm-routing-loop",)),
    Case("base-url-is-self", "base-url-self-loop",
         flags(EXEC.replace("127.0.0.1:4000/v1", "localhost:4020/v1")), line=7),
    Case("model-prefixed", "model-approach-prefix", flags(EXEC.replace("jerry-xl", "moa-jerry-xl"))),
    Case("model-combined-prefix", "model-approach-prefix",
         flags(EXEC.replace("jerry-xl", "bon&moa-jerry-xl"))),
    Case("approach-proxy", "approach-proxy", flags(EXEC + " --approach proxy"), line=7),
    Case("approach-proxy-abbreviated", "approach-proxy", flags(EXEC + " --appr=proxy")),
    Case("approach-proxy-in-dropin", "approach-proxy",
         lambda d: d.dropin("40-approach.conf",
                            "[Service]\nExecStart=\nExecStart=/usr/bin/optillm " + EXEC
                            + " --approach proxy\n"),
         line=3),
    Case("approach-auto", "approach-auto", flags(EXEC + " --approach auto")),
    Case("approach-fixed", "approach-fixed", flags(EXEC + " --approach moa")),
    Case("log-debug", "log-debug", flags(EXEC + " --log debug")),
    Case("key-on-execstart", "key-on-command-line", flags(EXEC + " --optillm-api-key opx-abc")),
    Case("key-on-execstart-from-variable", "key-on-command-line",
         flags(EXEC + " --optillm-api-key=${KEY}")),
    Case("no-loadcredential", "key-not-loaded",
         lambda d: d.replace("unit", "LoadCredential=api-key:/etc/optillm-proxy/api-key\n", "")),
    Case("no-upstream-loadcredential", "key-not-loaded",
         lambda d: d.replace("unit", "LoadCredential=upstream-key:/etc/optillm-proxy/upstream-key\n", ""),
         line=7),
    # key file
    Case("key-short", "key-too-short", lambda d: d.write("key", "changeme\n"), line=1),
    Case("key-empty", "key-too-short", lambda d: d.write("key", "")),
    Case("key-two-lines", "key-too-short",
         lambda d: d.write("key", "opx-" + "a" * 43 + "\nsecond-line\n"), line=2),
    Case("key-sk", "key-sk-prefix", lambda d: d.write("key", "sk-" + "a" * 43 + "\n"), line=1),
    # provider file
    Case("provider-deleted", "provider-file-missing", lambda d: d.proxy_config.unlink()),
    Case("provider-world-writable", "provider-file-writable", lambda d: d.proxy_config.chmod(0o666)),
    Case("provider-dir-group-writable", "provider-file-writable",
         lambda d: d.proxy_config.parent.chmod(0o775)),
    Case("provider-public-cloud", "provider-not-loopback",
         lambda d: d.replace("provider", "routing:", "  - name: openai\n    base_url: https://api.openai."
                             "com/v1\n    api_key: ${OPENAI_API_KEY}\nrouting:"), line=6),
    Case("provider-default-is-remote", "provider-not-loopback",
         lambda d: d.replace("provider", "http://127.0.0.1:4000/v1", "https://example.com/v1"),
         line=3),
    Case("provider-unset-variable", "provider-not-loopback",
         lambda d: d.replace("provider", "${LITELLM_URL:-http://127.0.0.1:4000/v1}", "${LITELLM_URL}"),
         line=3),
    Case("provider-no-base-url", "provider-not-loopback",
         lambda d: d.replace("provider", "    base_url: ${LITELLM_URL:-http://127.0.0.1:4000/v1}\n", "")),
    # LiteLLM config
    Case("litellm-unprefixed", "litellm-unprefixed-to-proxy",
         litellm_add(proxy_entry("smart-xl", "openai/other-xl")), line=20),
    Case("litellm-base-routed-to-proxy", "litellm-routing-loop",
         lambda d: d.replace("litellm", "http://10.0.0.5:8000/v1", "http://127.0.0.1:4020/v1")
         or d.replace("litellm", "model: openai/jerry-xl", "model: openai/self_consistency-jerry-xl"),
         line=5),
    Case("litellm-loop-through-alias", "litellm-routing-loop",
         lambda d: d.replace("litellm", "http://10.0.0.5:8000/v1", "http://127.0.0.1:4000/v1")
         or d.replace("litellm", "model: openai/jerry-xl", "model: openai/alias-xl")
         or d.append("litellm", proxy_entry("alias-xl", "openai/bon-jerry-xl"))),
    Case("litellm-unprefixed-self-loop", "litellm-routing-loop",
         litellm_add(proxy_entry("loop-xl", "openai/loop-xl")), also=("litellm-unprefixed-to-proxy",)),
    Case("litellm-plugin-not-enabled", "litellm-plugin-not-enabled",
         litellm_add(proxy_entry("readurls-jerry-xl", "openai/readurls-jerry-xl")), line=20,
         # Unloaded, `readurls-` is no prefix: the proxy passes the name back to LiteLLM.
         also=("litellm-routing-loop",)),
    # runtime
    Case("optillm-wrong-version", "optillm-version", dists(optillm="0.3.13", numpy="1.26.4"),
         also=("lock-unsatisfied",)),
    Case("optillm-not-installed", "optillm-version", dists(numpy="1.26.4"),
         also=("lock-unsatisfied",)),
    Case("manifest-wrong-version", "optillm-version",
         lambda d: d.replace("manifest", '"optillm_version": "0.3.12"', '"optillm_version": "0.3.11"')),
    Case("numpy-upgraded-by-hand", "lock-unsatisfied", dists(optillm="0.3.12", numpy="2.2.1"), line=2),
    Case("locked-package-missing", "lock-unsatisfied", dists(optillm="0.3.12"), line=2),
    Case("lock-file-gone", "lock-unsatisfied", lambda d: (d.venv / "libexec" / "lean.txt").unlink()),
    Case("lock-edited-after-install", "lock-unsatisfied",
         lambda d: (d.venv / "libexec" / "lean.txt").write_text(
             (d.venv / "libexec" / "lean.txt").read_text() + "# edited\n")),
    Case("manifest-without-lock", "lock-unsatisfied",
         lambda d: d.replace("manifest", '"lock_file"', '"lock_elsewhere"')),
    # A stub server.py: every patch-relevant function differs from (or is missing against) 0.3.12.
    Case("server-py-not-0312", "optillm-internals",
         lambda d: d.server_py("def get_config():\n    return None, None\n")),
    Case("server-py-missing", "optillm-internals",
         lambda d: d.server_py("").unlink()),
    Case("server-py-not-python", "optillm-internals", lambda d: d.server_py("def main(:\n")),
    # A typo also leaves majority_voting- unloaded: LiteLLM's entry for it loops (see corpus).
    Case("plugins-typo", "proxy-plugins-unknown", set_plugins("readurl"), line=3,
         also=("litellm-plugin-not-enabled", "litellm-routing-loop")),
    Case("plugins-none-and-names", "proxy-plugins-unknown", set_plugins("none,json"),
         also=("plugin-not-in-profile", "litellm-plugin-not-enabled", "litellm-routing-loop")),
    Case("plugin-needs-full", "plugin-not-in-profile", set_plugins("executecode,majority_voting"),
         line=3),
    Case("plugins-all-on-lean", "plugin-not-in-profile", set_plugins("all")),
    Case("launcher-plugins-flag-on-lean", "plugin-not-in-profile",
         flags(EXEC + " --plugins executecode"), line=7,
         also=("litellm-plugin-not-enabled", "litellm-routing-loop")),
]

CASES.append(Case("key-with-space", "key-too-short",
                  lambda d: d.write("key", "opx-" + "a" * 20 + " " + "b" * 20 + "\n"), line=1))
CASES.append(Case("no-environmentfile", "env-file-not-loaded",
                  lambda d: d.replace("unit", "EnvironmentFile=/etc/optillm-proxy/env\n", ""), line=7))
CASES.append(Case("environmentfile-optional", "env-file-not-loaded",
                  lambda d: d.replace("unit", "EnvironmentFile=/", "EnvironmentFile=-/"), line=9))
CASES.append(Case("records-not-a-choice", "request-settings", env_add("PROXY_RECORDS=yes\n"), line=4))
CASES.append(Case("usage-not-a-choice", "request-settings", env_add("PROXY_USAGE=true\n"), line=4))
