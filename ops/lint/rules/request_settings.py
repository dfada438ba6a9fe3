"""A request setting in the env file (a bound or PROXY_APPROACHES) is one the launcher refuses.

Why: the launcher reads UPSTREAM_TIMEOUT_SECONDS, UPSTREAM_RETRIES, REQUEST_DEADLINE_SECONDS,
MAX_REQUEST_BYTES, MAX_N, the serving bounds (SERVER_THREADS, CONNECTION_LIMIT, ...),
PROXY_APPROACHES, PROXY_RECORDS and PROXY_USAGE from the env file and refuses to start (exit 78)
when a bound is not a number or out of its range, when ADMIT_BODY_BYTES is below
MAX_REQUEST_BYTES or CONNECTION_LIMIT below SERVER_THREADS, when PROXY_APPROACHES names an
unknown approach, a plugin PROXY_PLUGINS does not enable, or a malformed combined form, or when
PROXY_RECORDS is neither journal nor off (the per-request records), or PROXY_USAGE neither
upstream nor stock (what an answer's usage reports); an edit therefore takes
the service down at its next restart. Lint calls the launcher's own checks
(optillm_proxy_launcher.settings), so the message is the launcher's.

Fails:
    UPSTREAM_RETRIES=9
    REQUEST_DEADLINE_SECONDS=abc
    PROXY_RECORDS=yes
    PROXY_USAGE=true
    PROXY_APPROACHES=moa,nosuch
    PROXY_APPROACHES=readurls             (with PROXY_PLUGINS=none)

Passes:
    UPSTREAM_RETRIES=1
    REQUEST_DEADLINE_SECONDS=300
    PROXY_RECORDS=off
    PROXY_USAGE=stock
    PROXY_APPROACHES=moa,bon,moa&bon      (or the line left out: the routed four + the plugins)

Fix: set the value the message names in /etc/optillm-proxy/env, or remove the line for the
default; list in PROXY_APPROACHES only core approaches and plugins PROXY_PLUGINS enables.
"""

from ops.from_launcher import settings

from ops.lint.finding import ERROR, Problem
from ops.lint.rules._launcher import REFUSES

ID = "request-settings"
SEVERITY = ERROR
REFUSES_START = True  # every finding is a start the launcher refuses: not ignorable


def check(ctx):
    if ctx.env is None:
        return
    path = str(ctx.inputs.env_file)
    values, parsed = {}, True
    for bound in settings.BOUNDS:
        a = ctx.env.get(bound.name)
        try:
            values[bound.name] = bound.parse({bound.name: a.value} if a is not None else {})
        except settings.ConfigRefused as exc:
            parsed = False
            yield Problem(path, a.line, REFUSES + str(exc))
    if parsed:
        try:
            settings.check_admission(values)
        except settings.ConfigRefused as exc:
            # The message starts with the setting at fault (NAME=value): point at its line.
            a = ctx.env.get(str(exc).split("=", 1)[0])
            yield Problem(path, a.line if a is not None else 1, REFUSES + str(exc))
    for variable, parse in ((settings.RECORDS_VARIABLE, settings.parse_records),
                            (settings.USAGE_VARIABLE, settings.parse_usage)):
        a = ctx.env.get(variable)
        if a is not None:
            try:
                parse(a.value)
            except settings.ConfigRefused as exc:
                yield Problem(path, a.line, REFUSES + str(exc))
    a = ctx.env.get(settings.APPROACHES_VARIABLE)
    enabled = ctx.enabled_plugins()
    if a is None or enabled is None:
        return
    # The runtime's plugin table when there is one, else lint's copy of the bundled slugs;
    # parse_approaches only asks which names are plugins.
    table = {slug: {} for slug in ctx.plugin_slugs}
    plugins = settings.enabled_slugs("all" if "*" in enabled[1] else sorted(enabled[1]), table)
    try:
        settings.parse_approaches(a.value, plugins, table)
    except settings.ConfigRefused as exc:
        yield Problem(path, a.line, REFUSES + str(exc))
