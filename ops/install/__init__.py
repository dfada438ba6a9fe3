"""`opsctl install`: what install.sh (a short bootstrap) hands over to. From layout.env, the
profile and the toolkit's files each step computes what the host (or a --root staging) should
hold, compares it with what it holds, and applies the difference (or, in a dry run, prints it).

- options: flags, OPX_INSTALL_* settings, --help text, exit codes (stdlib: the bootstrap runs it
  with the system Python before anything is installed, and it answers --uninstall there)
- templates: the toolkit's *.in files rendered with layout.env's values
- host: what the host holds (read-only predicates)
- run: a run's state: steps, the change list, dry run versus apply, failures
- steps: the install steps, in order, each a plan for its part and its apply (profile, Python,
  user, directories, configuration, unit, uninstall script, change detection)
- runtime: the runtime steps (the hashed venv, the launcher in it, the `current` link)
- files: writing files, links and directories atomically (the applies the steps call)
- service: the configuration check and the one reload or restart
- summary: the summary, the --json object, the exit code
- main: the order of the steps, the run from start to exit code
- command: the click command (the one module that is not stdlib only: a dry run is planned with
  the system Python from the checkout, so that it writes nothing, not even opsctl's venv)
"""
