"""optillm-proxy ops toolkit, one package per concern: probes (health, smoke), lint, runtime
(runtimes, upgrade, keys), eval, report; from_launcher is what ops takes from the launcher.
cli.py wires the packages' commands, errors.py maps failures to exit codes."""
