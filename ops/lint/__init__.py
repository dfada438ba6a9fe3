"""opsctl lint: catch known optillm-proxy misconfigurations before they bite.

readers/ turn files into data (never raising on bad input), context.py loads the inputs once,
rules/ holds one module per rule, engine.py runs them and renders findings.
"""
