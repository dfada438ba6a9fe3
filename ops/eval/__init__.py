"""opsctl eval: accuracy against cost of each model on the operator's own tasks.

tasks.py reads and scores the task file, engine.py asks and collects, results.py keeps the
resumable results file and builds the rows, stats.py the intervals, metrics.py reads the proxy's
counters, plot.py draws (only for --plot), command.py the click side.
"""
