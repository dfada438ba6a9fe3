"""opsctl runtime and key: side-by-side runtimes, validated upgrade and rollback, key rotation.

runtimes.py lists, resolves and prunes runtimes, upgrade.py switches and switches back,
config_check.py asks the launcher whether it would start (in transient_unit.py's unit), keys.py
writes the key files, install_state.py keeps the record of what the service last started with
(`opsctl install` calls both; by hand: `python -m ops.runtime.keys`,
`python -m ops.runtime.install_state`),
command.py the click side.
"""
