"""Lint against a real systemd (the booted box, fixture `box`, with the real install.sh run in it):
- the deployed box lints clean with every default path (opsctl as installed, run as root);
- the EnvironmentFile reader agrees with what systemd itself passes to a service, for the
  tricky cases env-syntax is about.
"""

from __future__ import annotations

import re

import pytest

from ops.lint.readers.envfile import parse_env_file

pytestmark = pytest.mark.box

# Each file is read separately: an unclosed quote swallows the rest of its file.
TRICKY_ENV_FILES = [
    "LT_A=plain\nLT_B = spaced value   \n  LT_C=indented\n# LT_D=comment\n; LT_E=semicolon comment\n",
    'LT_F="double \\"q\\" \\$x \\\\ \\n end"\nLT_G=\'single # not a comment\'\n',
    "LT_H=x # inline\nexport LT_I=1\nLT_J\nLT_K=\"a\"b c\n",
    "LT_L=line\\\ncontinued\nLT_M=1\nLT_M=2\nLT_N=back\\slash\nLT_O=\n",
    "LT_P=\"quoted \nLT_Q=swallowed\n",
    "LT_R='a'  'b'\nLT_S=tab\there\t\nLT_T=\"\"\n",
]


def systemd_environment(box, text: str, name: str) -> dict[str, str]:
    """The environment systemd gives a transient service with EnvironmentFile=<text>."""
    # Written from inside: the box's /tmp is its own tmpfs, not the rootfs the host sees.
    path = f"/var/tmp/{name}"
    box.run(f"cat > {path}", input=text).check()
    out = box.check(f"systemd-run --wait --pipe --quiet -p EnvironmentFile={path} /usr/bin/env -0")
    pairs = (item.partition("=") for item in out.split("\0") if item)
    return {k: v for k, _, v in pairs if k.startswith("LT_")}


@pytest.mark.parametrize("index", range(len(TRICKY_ENV_FILES)))
def test_env_reader_matches_real_systemd(box, index):
    text = TRICKY_ENV_FILES[index]
    ours = {k: v for k, v in parse_env_file(text).as_dict().items() if k.startswith("LT_")}
    assert ours == systemd_environment(box, text, f"lint-env-{index}")


def test_deployed_box_lints_clean(box):
    result = box.run("opsctl lint")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert re.search(r"profile=lean optillm=0\.3\.12", result.stderr), result.stderr


def test_lint_in_the_box_catches_a_dropin(box):
    dropin_dir = "/etc/systemd/system/optillm-proxy.service.d"
    box.check(f"mkdir -p {dropin_dir} && printf '[Service]\\nEnvironment=OPTILLM_APPROACH=proxy\\n'"
              f" > {dropin_dir}/99-lint-test.conf")
    try:
        result = box.run("opsctl lint --json")
        assert result.rc == 1  # an error: the launcher refuses to start with it
        assert '"rule": "optillm-variable"' in result.stdout
    finally:
        box.check(f"rm -f {dropin_dir}/99-lint-test.conf")
