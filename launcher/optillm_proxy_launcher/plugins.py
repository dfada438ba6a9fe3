"""Which plugins optillm loads: only the ones PROXY_PLUGINS enables, only from the locked package.

Patch point (see patches.py): optillm.server.load_plugins, which optillm.server.main() calls
through the module global, is replaced by the loader made here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping

from optillm_proxy_launcher.settings import ConfigRefused


def make_subset_loader(server, slugs: list[str], table: Mapping[str, dict]):
    """A load_plugins for optillm.server that imports only the named package plugin files.

    Fills server.plugin_approaches exactly as stock load_plugins does (module named after the file
    stem, SLUG -> run). Never looks at <cwd>/optillm/plugins or --plugins-dir: only code shipped
    in the locked package runs. A named plugin that fails to import stops the start (exit 78).
    """
    import optillm

    package_plugin_dir = Path(optillm.__file__).resolve().parent / "plugins"

    def load_plugins() -> None:
        server.plugin_approaches.clear()
        for slug in slugs:
            module_name = table[slug]["module"]
            plugin_file = package_plugin_dir / f"{module_name}.py"
            try:
                spec = importlib.util.spec_from_file_location(module_name, plugin_file)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except Exception as exc:  # any import-time failure of plugin code is a config problem here
                raise ConfigRefused(f"enabled plugin '{slug}' failed to load from {plugin_file}: "
                                    f"{exc.__class__.__name__}: {exc} (remove it from PROXY_PLUGINS or fix the runtime)"
                                    ) from None
            if getattr(module, "SLUG", None) != slug or not callable(getattr(module, "run", None)):
                raise ConfigRefused(f"{plugin_file} does not define SLUG={slug!r} and run(): the plugin table does "
                                    "not match this optillm; reinstall the runtime")
            server.plugin_approaches[module.SLUG] = module.run
            server.logger.info(f"Loaded package plugin: {module.SLUG}")
        server.logger.info(f"optillm-proxy-launcher: {len(slugs)} plugin(s) enabled by PROXY_PLUGINS")

    return load_plugins
