"""optillm-proxy's launcher: stock optillm 0.3.12, started and bounded the way the unit needs it.

One module per concern:
- settings: every configuration check the launcher refuses to start on (stdlib; lint calls it too)
- policy: what a chat completion body may ask of optillm (stdlib)
- upstream: one shared, bounded upstream client and per-request accounting
- routes: which requests reach optillm's views; the policy inside the chat view
- gateway: the WSGI layer in front of optillm's Flask app
- patches: the documented patch points, verified against 0.3.12 at start
- internals: what an optillm tree's files say about what the patch points rely on
- plugins: loading only the enabled plugins
- notify: sd_notify READY/STATUS/WATCHDOG
- main: the start sequence
"""
