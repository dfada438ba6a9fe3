"""The optillm command line a unit rule checks (None when exec-start already complained)."""


def optillm_command(ctx):
    es = ctx.exec_start
    if es is None or es.command.error or es.command.form == "unknown":
        return None
    return es
