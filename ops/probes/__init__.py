"""opsctl health and smoke: is the proxy up, and does each strategy really run.

health.py is the probe (stdlib only: a plain `opsctl health` imports nothing else of ops but the
modules below it), http_probe.py its stdlib GET, unit_state.py the unit's failure, client.py the
URL and key handling smoke and eval share, smoke.py the strategy check, command.py the click side.
"""
