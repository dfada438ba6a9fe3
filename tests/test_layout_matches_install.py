"""install.sh carries the deployed layout as bash constants (it cannot import ops.layout);
this test fails the moment the two disagree, or install.sh grows a path layout.py does not know."""

from __future__ import annotations

import re
from pathlib import Path

from ops import layout
from ops.layout import DEFAULT, Layout

INSTALL_SH = Path(__file__).resolve().parents[1] / "install.sh"
# Paths install.sh uses that are not part of the deployed layout.
NOT_LAYOUT = {"SYSTEM_PYTHON"}


def install_constants() -> dict[str, str]:
    text = INSTALL_SH.read_text()
    return dict(re.findall(r'^readonly ([A-Z_]+)="([^"$]*)"$', text, flags=re.MULTILINE))


def expected() -> dict[str, str]:
    probe = Path("/runtime")
    return {
        "SERVICE": layout.SERVICE,
        "SERVICE_USER": layout.SERVICE_USER,
        "OPTILLM_VERSION": layout.OPTILLM_VERSION,
        "PROFILES": " ".join(layout.PROFILES),
        "DEFAULT_PROFILE": layout.DEFAULT_PROFILE,
        "LISTEN_HOST": layout.LISTEN_HOST,
        "LISTEN_PORT": str(layout.LISTEN_PORT),
        "UPSTREAM_URL": layout.UPSTREAM_URL,
        "PREFIX_DIR": str(DEFAULT.prefix),
        "RUNTIMES_DIR": str(DEFAULT.runtimes),
        "CURRENT_LINK": str(DEFAULT.current),
        "PREVIOUS_LINK": str(DEFAULT.previous),
        "TOOLS_DIR": str(DEFAULT.tools),
        "INSTALL_STATE_FILE": str(DEFAULT.install_state),
        "UNINSTALL_SCRIPT": str(DEFAULT.uninstall_script),
        "CONF_DIR": str(DEFAULT.conf_dir),
        "ENV_FILE": str(DEFAULT.env_file),
        "KEY_FILE": str(DEFAULT.key_file),
        "UPSTREAM_KEY_FILE": str(DEFAULT.upstream_key_file),
        "SOCKET_FILE": str(DEFAULT.socket_file),
        "STATE_DIR": str(DEFAULT.state_dir),
        "PROVIDER_FILE": str(DEFAULT.provider_file),
        "UNIT_FILE": str(DEFAULT.unit_file),
        "DROPIN_DIR": str(DEFAULT.dropin_dir),
        "OPSCTL_LINK": str(DEFAULT.opsctl_link),
        "LAUNCHER_REL": str(DEFAULT.launcher(probe).relative_to(probe)),
        "MANIFEST_REL": str(DEFAULT.runtime_manifest(probe).relative_to(probe)),
        "SITE_PACKAGES_REL": str(DEFAULT.site_packages(probe).relative_to(probe)),
    }


def test_install_sh_constants_equal_ops_layout():
    constants = install_constants()
    want = expected()
    assert {name: constants.get(name) for name in want} == want


def test_every_path_in_install_sh_header_is_known_to_ops_layout():
    unknown = {name: value for name, value in install_constants().items()
               if value.startswith("/") and name not in expected() and name not in NOT_LAYOUT}
    assert unknown == {}, "add these to ops/layout.py (and to expected() here)"


def test_layout_under_a_root_stages_the_same_paths():
    staged = Layout(Path("/stage"))
    assert staged.env_file == Path("/stage/etc/optillm-proxy/env")
    assert staged.install_state == Path("/stage/opt/optillm-proxy/install-state")
