"""opsctl report: what each approach costs, from the launcher's per-request records.

engine.py streams the records and renders the table; command.py the click side. A package, not a
shared module, because it owns a command like the others.
"""
