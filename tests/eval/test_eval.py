"""`opsctl eval`: scorers, task files, the interval, the majority-vote prediction, resume, the JSON
shape, exit codes, and (marker `real`) the demonstration against the real launcher.

The demonstration is a SIMULATION, not a model: the recording upstream (tools/fake_upstream.py,
POST /_simulate) answers each sample right with probability p, seeded. It shows that the measurement
sees a strategy's effect and that majority voting's measured lift is the one the binomial/plurality
arithmetic predicts; it says nothing about any real model (docs/eval.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import ops.eval.engine
from ops.cli import cli
from ops.eval.metrics import parse as parse_metrics
from ops.eval.stats import majority_vote_accuracy, nearest_rank, wilson
from ops.eval.tasks import Task, final_answer, last_number, load, parse_text
from tools.fake_upstream import ANSWER, Simulation, make_server

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "eval" / "tasks.jsonl"
KEY = "opx-eval-test-key-0123456789abcdef"


def task(answer, scorer=None, tolerance=None, prompt="q") -> Task:
    obj = {"id": "t", "prompt": prompt, "answer": answer}
    if scorer:
        obj["scorer"] = scorer
    if tolerance is not None:
        obj["tolerance"] = tolerance
    tasks, bad = parse_text(json.dumps(obj))
    assert not bad, bad
    return tasks[0]


# --- scorers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, expected", [
    ("The answer is 73.", 73), ("It costs 1,234 in total", 1234), ("x = -3", -3), ("about 2.5 km", 2.5),
    ("3/4 of it", 0.75), ("25% of them", 25), ("first 7 then 9", 9), ("no number", None),
    ("<think>maybe 12</think>The answer is 13.", 13), ("The answer is \u22124.", -4),
])
def test_numeric_takes_the_last_number(reply, expected):
    assert last_number(reply) == expected


def test_numeric_scorer_default_and_tolerance():
    assert task(73).scorer == "numeric" and task("1,200").scorer == "numeric" and task("Carol").scorer == "exact"
    assert task(73).score("so the answer is 73.") and not task(73).score("The answer is 74.")
    assert task(21.1).score("The answer is 21.10") and not task(21.1).score("21.2")
    assert task(0.05, tolerance=0.001).score("The ball costs $0.05.")
    assert task(10, tolerance=0.5).score("10.4") and not task(10, tolerance=0.5).score("10.6")
    assert not task(5).score("<think>5</think> I do not know")


@pytest.mark.parametrize("reply, ok", [
    ("The answer is Carol.", True), ("Final answer: **carol**", True), ("Carol", True),
    ("So...\nCarol owns it\nThe answer is Carol", True), ("\\boxed{Carol}", True),
    ("The answer is Bob.", False), ("The answer is not-Carol-1.", False), ("Carol and Bob", False),
])
def test_exact_compares_the_final_answer(reply, ok):
    assert task("Carol").score(reply) is ok


def test_final_answer_order():
    assert final_answer("the answer is 4\n\\boxed{5}") == "5"
    assert final_answer("line one\nanswer: B\nthanks") == "B"
    assert final_answer("a\n\nlast line  ") == "last line"


@pytest.mark.parametrize("reply, ok", [
    ("The answer is B.", True), ("(B)", True), ("B) 36", True), ("b", True), ("**B**", True),
    ("Option B", True), ("I pick (B) here", True), ("The answer is C.", False),
    ("A train leaves at noon", False), ("Because of that", False),
])
def test_choice_reads_the_option_letter(reply, ok):
    assert task("B", "choice").score(reply) is ok


def test_regex_searches_the_reply():
    t = task(r"(?i)\b(seven|7)\b", "regex")
    assert t.score("It is Seven.") and t.score("7 of them") and not t.score("17")


# --- task files -------------------------------------------------------------------------------


def test_bad_lines_are_reported_with_their_numbers():
    text = "\n".join([
        json.dumps({"id": 1, "prompt": "p", "answer": 3}),
        "",
        "{not json",
        json.dumps({"id": 2, "prompt": "p", "answer": 3, "scorrer": "exact"}),
        json.dumps({"id": 1, "prompt": "p2", "answer": 4}),
        json.dumps({"id": 3, "prompt": "", "answer": 4}),
        json.dumps({"id": 4, "prompt": "p", "answer": "x", "scorer": "numeric"}),
        json.dumps({"id": 5, "prompt": "p", "answer": "B", "scorer": "choice", "tolerance": 1}),
        json.dumps({"id": 6, "prompt": "p", "answer": "(", "scorer": "regex"}),
        json.dumps({"id": 7, "prompt": "p", "answer": "BC", "scorer": "choice"}),
        json.dumps({"id": 8, "prompt": "p", "answer": True}),
        json.dumps([1, 2]),
        json.dumps({"id": 9, "prompt": "p", "answer": "yes", "scorer": "fuzzy"}),
    ])
    tasks, bad = parse_text(text)
    assert [t.id for t in tasks] == ["1"]
    reasons = dict(bad)
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert "not valid JSON" in reasons[3] and "scorrer" in reasons[4] and "duplicate id '1'" in reasons[5]
    assert "numeric needs a number" in reasons[7] and "tolerance" in reasons[8]
    assert "regular expression" in reasons[9] and "one option letter" in reasons[10]
    assert "unknown scorer" in reasons[13]


def test_fingerprint_follows_what_the_task_asks():
    assert task(3).fingerprint == task(3).fingerprint
    assert task(3).fingerprint != task(4).fingerprint != task(4, prompt="other").fingerprint


def test_the_shipped_task_set():
    """Written for this project: arithmetic and logic word problems with checkable answers."""
    tasks, bad, _ = load(str(SHIPPED))
    assert not bad and len(tasks) >= 50
    kinds = Counter(t.scorer for t in tasks)
    assert kinds["numeric"] >= 40 and kinds["choice"] >= 5 and kinds["exact"] >= 5
    # Every shipped task is one the simulator can answer right and wrong, and the scorers agree with it.
    lines = [json.loads(line) for line in SHIPPED.read_text().splitlines()]
    sim = Simulation(0.5, 1, 4, lines)
    assert len(sim.by_prompt) == len(tasks)
    for t in tasks:
        right, wrong = sim.by_prompt[t.prompt]
        assert t.score(f"The answer is {right}."), t.id
        assert not any(t.score(f"The answer is {w}.") for w in wrong), t.id
        assert len(set(wrong)) == 4 and right not in wrong


# --- statistics -------------------------------------------------------------------------------


def test_wilson_interval():
    low, high = wilson(28, 40)
    assert (round(low, 4), round(high, 4)) == (0.5457, 0.8193)
    assert wilson(0, 10)[0] == 0 and wilson(10, 10)[1] == pytest.approx(1)
    assert 0 < wilson(0, 10)[1] < 0.3 and 0.7 < wilson(10, 10)[0] < 1
    with pytest.raises(ValueError):
        wilson(0, 0)


def test_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values, 0.5) == 50 and nearest_rank(values, 0.95) == 95 and nearest_rank([], 0.5) is None


def test_majority_vote_prediction():
    assert majority_vote_accuracy(0.6, 1, 4) == pytest.approx(0.6)
    p, q = 0.6, 0.4
    assert majority_vote_accuracy(p, 3, 1) == pytest.approx(p ** 3 + 3 * p * p * q)
    assert majority_vote_accuracy(0.5, 2, 1) == pytest.approx(0.5)  # 1-1 tie: a coin toss
    assert majority_vote_accuracy(0.6, 8, 4) == pytest.approx(0.9234, abs=1e-4)


def optillm_vote(answers: list[str]) -> str:
    """optillm 0.3.12's majority_voting plugin: Counter.most_common keeps the first seen on a tie."""
    return Counter(answers).most_common(1)[0][0]


def test_simulated_majority_vote_matches_the_prediction_and_the_interval_covers_it():
    """The simulator's samples, voted the way the plugin votes: over 200 seeds of 100 votes each, the
    95% interval holds the predicted accuracy about 95% of the time (a check of the simulator, the
    prediction and the interval together)."""
    p, k, wrong_values = 0.6, 8, 4
    predicted = majority_vote_accuracy(p, k, wrong_values)
    tasks = [{"prompt": f"task {i}", "answer": i} for i in range(100)]
    covered = total = 0
    for seed in range(200):
        sim = Simulation(p, seed, wrong_values, tasks)
        right = sum(optillm_vote(sim.answers(t["prompt"], k)) == f"The answer is {t['answer']}." for t in tasks)
        total += right
        low, high = wilson(right, len(tasks))
        covered += low <= predicted <= high
    assert abs(total / (200 * len(tasks)) - predicted) < 0.01
    assert 0.9 <= covered / 200 <= 0.99


def test_metrics_parsing():
    text = "\n".join([
        "# HELP optillm_proxy_upstream_calls_total Upstream calls",
        'optillm_proxy_upstream_calls_total{approach="none"} 3.0',
        'optillm_proxy_upstream_calls_total{approach="moa"} 30.0',
        'optillm_proxy_requests_total{approach="moa",status="200"} 9.0',
        'optillm_proxy_requests_total{approach="moa",status="502"} 1.0',
        'optillm_proxy_upstream_tokens_total{approach="moa",kind="prompt"} 120.0',
        'optillm_proxy_upstream_tokens_total{approach="moa",kind="completion"} 80.0',
        'process_cpu_seconds_total 1.5',
    ])
    counts = parse_metrics(text)
    assert counts["moa"].requests == 10 and counts["moa"].calls == 30
    assert counts["moa"].prompt_tokens == 120 and counts["moa"].completion_tokens == 80
    assert parse_metrics("litellm_requests_total 4\n") is None


# --- the command, in process ------------------------------------------------------------------


@pytest.fixture
def sim_upstream():
    """The recording upstream, simulating p=0.6 on a small task set; yields (base URL, task file text)."""
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def upstream_url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def control(server, path: str, body: dict | None = None):
    return httpx.post(f"{upstream_url(server)}{path}", json=body or {}, timeout=5).json()


def chat_calls(server) -> int:
    calls = httpx.get(f"{upstream_url(server)}/_calls", timeout=5).json()
    return sum(c["path"].endswith("/chat/completions") for c in calls)


def small_tasks(tmp_path: Path, count: int = 12) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{i}", "prompt": f"What is {i} + {i}?", "answer": 2 * i}) + "\n"
                            for i in range(count)))
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, ["eval", *args], env={"OPSCTL_API_KEY": KEY})


def test_fake_upstream_default_answer_is_unchanged_and_reset_ends_the_simulation(sim_upstream, tmp_path):
    def ask(prompt: str, n: int = 1) -> dict:
        return httpx.post(f"{upstream_url(sim_upstream)}/v1/chat/completions", timeout=5,
                          json={"model": "jerry-xl", "n": n, "messages": [{"role": "user", "content": prompt}]}).json()

    plain = ask("What is 1 + 1?", 2)
    assert [c["message"]["content"] for c in plain["choices"]] == ["The answer is 42."] * 2
    assert plain["usage"] == {"prompt_tokens": 10, "completion_tokens": 14, "total_tokens": 24}
    said = control(sim_upstream, "/_simulate", {"p": 1.0, "seed": 3, "wrong_values": 4,
                                                "tasks": [{"prompt": "What is 1 + 1?", "answer": 2}]})
    assert said["simulating"] == 1
    assert ask("Say: What is 1 + 1? now")["choices"][0]["message"]["content"] == "The answer is 2."
    assert ask("unrelated")["choices"][0]["message"]["content"] == "The answer is 42."
    control(sim_upstream, "/_reset")
    assert ask("What is 1 + 1?")["choices"][0]["message"]["content"] == "The answer is 42."
    assert httpx.post(f"{upstream_url(sim_upstream)}/_simulate", json={"p": 2}, timeout=5).status_code == 400


def test_json_shape_resume_and_plot(sim_upstream, tmp_path):
    tasks = small_tasks(tmp_path)
    control(sim_upstream, "/_simulate", {"p": 0.6, "seed": 7, "wrong_values": 4,
                                         "tasks": [json.loads(line) for line in tasks.read_text().splitlines()]})
    results = tmp_path / "results.jsonl"
    plot = tmp_path / "chart.svg"
    args = ["--tasks", str(tasks), "--model", "jerry-xl", "--model", "other-xl", "--repeat", "2",
            "--url", upstream_url(sim_upstream), "--results", str(results), "--json", "--plot", str(plot)]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["asked"] == 48 and report["reused"] == 0 and chat_calls(sim_upstream) == 48
    rows = {r["model"]: r for r in report["models"]}
    for row in rows.values():
        for key in ("model", "tasks", "accuracy", "ci_low", "ci_high", "latency_p50_s", "latency_p95_s",
                    "upstream_calls_per_task", "tokens_per_task", "cost_vs_first"):
            assert key in row
        assert row["tasks"] == 12 and row["samples"] == 24
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
        assert row["source"] == "answer usage" and row["upstream_calls_per_task"] is None
    assert rows["jerry-xl"]["cost_vs_first"] == 1.0
    svg = ET.parse(plot).getroot()
    assert svg.tag.endswith("svg") and "other-xl" in plot.read_text()
    # Everything scored: a re-run sends nothing and reports the same.
    again = invoke(*args)
    assert again.exit_code == 0 and json.loads(again.stdout)["asked"] == 0 and chat_calls(sim_upstream) == 48
    assert json.loads(again.stdout)["models"] == report["models"]
    # An interrupted run: drop the last 10 answers (and cut one line mid-write): only those are asked.
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:-10]) + "\n" + lines[-10][:25])
    resumed = invoke(*args)
    assert resumed.exit_code == 0, resumed.output
    out = json.loads(resumed.stdout)
    assert out["asked"] == 10 and out["reused"] == 38 and chat_calls(sim_upstream) == 58
    assert any("unreadable line" in n for n in out["notes"])
    # A task whose answer changed is asked again; the others are not.
    text = tasks.read_text().replace('"answer": 0}', '"answer": 0.0, "scorer": "numeric", "tolerance": 0}')
    tasks.write_text(text)
    changed = json.loads(invoke(*args).stdout)
    assert changed["asked"] == 4  # t0, two repeats, two models


def test_text_report_and_default_results_file(sim_upstream, tmp_path, monkeypatch):
    """The default results file is the user's own state, not the working directory: the command as
    printed runs from a read-only checkout too."""
    tasks = small_tasks(tmp_path, 5)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    result = invoke("--tasks", str(tasks), "--model", "jerry-xl", "--model", "moa-jerry-xl",
                    "--url", upstream_url(sim_upstream))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split()[:4] == ["MODEL", "ANSWERS", "ACCURACY", "95%"]
    assert lines[2].startswith("jerry-xl") and lines[3].startswith("moa-jerry-xl")
    assert "moa-jerry-xl vs jerry-xl:" in result.stdout and "Wilson score interval" in result.stdout
    assert "\r" not in result.output  # no progress bar when not on a terminal
    assert list(checkout.iterdir()) == [], "eval wrote into the working directory"
    written = list((tmp_path / "home" / ".local" / "state" / "opsctl" / "eval").glob("tasks.eval-*.jsonl"))
    assert len(written) == 1 and len(written[0].read_text().splitlines()) == 10
    assert str(written[0]) in lines[0], lines[0]
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    again = invoke("--tasks", str(tasks), "--model", "jerry-xl", "--url", upstream_url(sim_upstream), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["results_file"].startswith(str(tmp_path / "state" / "opsctl" / "eval"))


def test_limit_asks_a_sample_that_a_full_run_reuses(sim_upstream, tmp_path):
    tasks, results = small_tasks(tmp_path, 5), str(tmp_path / "r.jsonl")
    common = ("--tasks", str(tasks), "--model", "jerry-xl", "--url", upstream_url(sim_upstream), "--results", results,
              "--json")
    sample = invoke(*common, "--limit", "2")
    assert sample.exit_code == 0, sample.output
    report = json.loads(sample.stdout)
    assert report["asked"] == 2 and report["tasks"] == 2 and chat_calls(sim_upstream) == 2
    full = invoke(*common)
    assert full.exit_code == 0 and json.loads(full.stdout)["asked"] == 3 and json.loads(full.stdout)["reused"] == 2
    assert invoke(*common, "--limit", "0").exit_code == 3


def test_usage_errors_exit_3_and_send_nothing(sim_upstream, tmp_path):
    url = upstream_url(sim_upstream)
    good = small_tasks(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "{oops\n")
    cases = [
        (["--model", "m", "--url", url], "Missing option '--tasks'"),
        (["--tasks", str(good), "--url", url], "Missing option '--model'"),
        (["--tasks", str(good), "--model", "m", "--url", "ftp://x"], "scheme must be http"),
        (["--tasks", str(good), "--model", "m", "--url", url, "--repeat", "0"], "--repeat"),
        (["--tasks", str(good), "--model", "m", "--url", url, "--plot", str(tmp_path / "c.png")], "SVG only"),
        (["--tasks", str(tmp_path / "none.jsonl"), "--model", "m", "--url", url], "cannot read --tasks"),
        (["--tasks", str(bad), "--model", "m", "--url", url], "line 13: not valid JSON"),
        (["--tasks", str(good), "--model", "m", "--model", "m", "--url", url], "given twice"),
    ]
    for args, said in cases:
        result = invoke(*args, "--results", str(tmp_path / "r.jsonl"))
        assert result.exit_code == 3, (args, result.output)
        assert said in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert chat_calls(sim_upstream) == 0
    skipped = invoke("--tasks", str(bad), "--model", "m", "--url", url, "--results", str(tmp_path / "s.jsonl"),
                     "--skip-bad-lines")
    assert skipped.exit_code == 0 and "skipped" in skipped.stderr and "line 13" in skipped.stderr


def test_unreachable_exits_2(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = invoke("--tasks", str(small_tasks(tmp_path)), "--model", "m", "--url", f"http://127.0.0.1:{port}",
                    "--results", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 2, result.output
    assert "unreachable" in result.stderr and "Traceback" not in result.output


def mock(monkeypatch, handler) -> list[httpx.Request]:
    seen: list[httpx.Request] = []
    lock = threading.Lock()

    def recording(request: httpx.Request) -> httpx.Response:
        with lock:
            seen.append(request)
        return handler(request)

    monkeypatch.setattr(ops.eval.engine, "make_transport", lambda url: httpx.MockTransport(recording))
    return seen


def completion(content: str, usage: dict | None = None) -> httpx.Response:
    return httpx.Response(200, json={"model": "m", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": content}}], "usage": usage or {"completion_tokens": 5}})


def test_key_refused_stops_at_once(monkeypatch, tmp_path):
    seen = mock(monkeypatch, lambda r: httpx.Response(401, json={"error": "bad key"}))
    result = invoke("--tasks", str(small_tasks(tmp_path)), "--model", "m", "--concurrency", "1",
                    "--metrics-url", "none", "--results", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 1 and "401 for m: the key from $OPSCTL_API_KEY was refused" in result.stderr
    assert len(seen) == 1
    assert KEY not in result.output


def test_errors_exit_1_and_are_retried_by_the_next_run(monkeypatch, tmp_path):
    tasks = small_tasks(tmp_path, 6)
    state = {"fail": {"What is 2 + 2?", "What is 4 + 4?"}}

    def handler(request):
        prompt = json.loads(request.content)["messages"][0]["content"]
        if prompt in state["fail"]:
            return httpx.Response(502, json={"error": {"message": "upstream error", "type": "upstream_error"}})
        i = int(prompt.split()[2])
        return completion(f"The answer is {2 * i}.")

    mock(monkeypatch, handler)
    args = ["--tasks", str(tasks), "--model", "m", "--metrics-url", "none", "--results", str(tmp_path / "r.jsonl"),
            "--json"]
    first = invoke(*args)
    assert first.exit_code == 1
    row = json.loads(first.stdout)["models"][0]
    assert row["samples"] == 4 and row["errors"] == 2 and row["accuracy"] == 1.0
    state["fail"] = set()
    second = invoke(*args)
    assert second.exit_code == 0 and json.loads(second.stdout)["asked"] == 2


def test_interrupted_run_keeps_its_answers_and_resumes(monkeypatch, tmp_path):
    count = {"n": 0}

    def handler(request):
        count["n"] += 1
        if count["n"] == 4:
            raise KeyboardInterrupt  # as Ctrl-C would, mid-run
        return completion("The answer is 0.")

    mock(monkeypatch, handler)
    args = ["--tasks", str(small_tasks(tmp_path, 8)), "--model", "m", "--concurrency", "1", "--metrics-url", "none",
            "--results", str(tmp_path / "r.jsonl")]
    result = invoke(*args)
    assert result.exit_code == 130 and "run the same command again to resume" in result.stderr
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3
    again = invoke(*args, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["asked"] == 5 and json.loads(again.stdout)["reused"] == 3


def test_a_model_that_only_errors_is_given_up(monkeypatch, tmp_path):
    def handler(request):
        if json.loads(request.content)["model"] == "cepo-m":
            return httpx.Response(400, json={"error": {"message": "approach not allowed"}})
        return completion("The answer is 0.")

    seen = mock(monkeypatch, handler)
    result = invoke("--tasks", str(small_tasks(tmp_path, 30)), "--model", "m", "--model", "cepo-m",
                    "--concurrency", "1", "--metrics-url", "none", "--results", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 1
    assert "cepo-m: gave up after 5 errors in a row" in result.stdout and "approach not allowed" in result.stdout
    assert sum(json.loads(r.content)["model"] == "cepo-m" for r in seen) == 5


def test_proxy_metrics_give_calls_and_tokens_per_task(monkeypatch, tmp_path):
    counters = {"none": [0, 0, 0, 0], "moa": [0, 0, 0, 0]}  # requests, calls, prompt, completion
    lock = threading.Lock()

    def handler(request):
        if request.url.path == "/metrics":
            lines = []
            for approach, (req, calls, prompt, comp) in counters.items():
                lines += [f'optillm_proxy_requests_total{{approach="{approach}",status="200"}} {req}',
                          f'optillm_proxy_upstream_calls_total{{approach="{approach}"}} {calls}',
                          f'optillm_proxy_upstream_tokens_total{{approach="{approach}",kind="prompt"}} {prompt}',
                          f'optillm_proxy_upstream_tokens_total{{approach="{approach}",kind="completion"}} {comp}']
            return httpx.Response(200, text="\n".join(lines))
        model = json.loads(request.content)["model"]
        approach, calls = ("moa", 3) if model.startswith("moa-") else ("none", 1)
        with lock:
            c = counters[approach]
            c[0] += 1 + (approach == "moa")  # one request of someone else's per moa request
            c[1] += calls * (1 + (approach == "moa"))
            c[2] += 20 * calls * (1 + (approach == "moa"))
            c[3] += 10 * calls * (1 + (approach == "moa"))
        if approach == "none":
            return completion("The answer is 0.", {"prompt_tokens": 20, "completion_tokens": 10})
        return completion("The answer is 0.", {"completion_tokens": 30})

    mock(monkeypatch, handler)
    result = invoke("--tasks", str(small_tasks(tmp_path, 4)), "--model", "jerry-xl", "--model", "moa-jerry-xl",
                    "--results", str(tmp_path / "r.jsonl"), "--json")
    assert result.exit_code == 0, result.output
    base, moa = json.loads(result.stdout)["models"]
    assert base["source"] == moa["source"] == "proxy metrics"
    assert base["upstream_calls_per_task"] == 1 and moa["upstream_calls_per_task"] == 3
    assert base["tokens_per_task"] == 30 and moa["tokens_per_task"] == 90
    assert moa["cost_vs_first"] == 3 and moa["cost_basis"] == "upstream prompt+completion tokens"
    assert moa["other_requests"] == 4 and base["other_requests"] == 0


def test_a_strategy_model_the_proxy_never_counted_is_named_and_exits_1(monkeypatch, tmp_path):
    """Through LiteLLM, a strategy name LiteLLM sends elsewhere answers fine, yet no strategy ran:
    the proxy's counters for its approach do not move. That is no 1.00x result, it is a warning."""
    counters = {"none": 0, "moa": 0}
    lock = threading.Lock()

    def handler(request):
        if request.url.path == "/metrics":
            return httpx.Response(200, text="\n".join(
                f'optillm_proxy_requests_total{{approach="{a}",status="200"}} {n}\n'
                f'optillm_proxy_upstream_calls_total{{approach="{a}"}} {n}' for a, n in counters.items()))
        if json.loads(request.content)["model"] == "jerry-xl":
            with lock:
                counters["none"] += 1  # the base model passes the proxy; moa- never reaches it
        return completion("The answer is 0.")

    mock(monkeypatch, handler)
    result = invoke("--tasks", str(small_tasks(tmp_path, 3)), "--model", "jerry-xl", "--model", "moa-jerry-xl",
                    "--results", str(tmp_path / "r.jsonl"), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["unrouted"] == ["moa-jerry-xl"] and report["exit_code"] == 1
    assert any(n.startswith("moa-jerry-xl: the proxy at ") and "no moa strategy ran" in n for n in report["notes"])
    text = invoke("--tasks", str(small_tasks(tmp_path, 3)), "--model", "moa-jerry-xl",
                  "--results", str(tmp_path / "r2.jsonl"))
    assert text.exit_code == 1 and "counted none of its 3 answered request(s) for approach moa" in text.stdout


def test_mixed_sources_compare_completion_tokens(monkeypatch, tmp_path):
    from ops.eval.results import BASIS_COMPLETION, Row, add_costs

    def row(model, source, total, completion):
        return Row(model=model, approach="none", tasks=1, samples=1, correct=1, accuracy=1.0, ci_low=0.2,
                   ci_high=1.0, errors=0, missing=0, latency_p50_s=0.1, latency_p95_s=0.1,
                   upstream_calls_per_task=None, tokens_per_task=total, prompt_tokens_per_task=None,
                   completion_tokens_per_task=completion, source=source)

    rows = [row("a", "proxy metrics", 30.0, 10.0), row("b", "answer usage", 40.0, 40.0)]
    add_costs(rows)
    assert rows[1].cost_vs_first == 4 and rows[1].cost_basis == BASIS_COMPLETION


def test_eval_costs_other_commands_nothing():
    code = ("import sys, ops.cli; bad = [m for m in sys.modules if m.startswith(('leather', 'ops.eval.engine'))]; "
            "sys.exit(f'imported: {bad}' if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- the demonstration (SIMULATION), through the real launcher --------------------------------


P, SEED, WRONG_VALUES, REPEAT = 0.6, 7, 4, 2
MODELS = ["jerry-xl", "majority_voting-jerry-xl", "self_consistency-jerry-xl", "moa-jerry-xl", "bon-jerry-xl"]
CALLS = {"jerry-xl": 1, "majority_voting-jerry-xl": 1, "self_consistency-jerry-xl": 5, "moa-jerry-xl": 3,
         "bon-jerry-xl": 4}
MAJORITY_K = 8  # optillm 0.3.12 majority_voting_plugin.DEFAULT_K: one call with n=8


@pytest.mark.real
def test_demonstration_simulated_upstream_majority_voting_lift_matches_the_prediction(lean_runtime, tmp_path):
    """SIMULATION, not a model: each upstream sample is right with p=0.6 (seeded). Majority voting
    must beat the base model by what the plurality arithmetic predicts; the other strategies' numbers
    are printed as measured, whatever they are."""
    from tests.fixtures.runtime import REPO as ROOT, launcher_credentials, start_optillm
    from tests.fixtures.upstream import start_upstream

    upstream, stop_upstream = start_upstream()
    lines = [json.loads(line) for line in SHIPPED.read_text().splitlines()]
    said = upstream._call("POST", "/_simulate", {"p": P, "seed": SEED, "wrong_values": WRONG_VALUES, "tasks": lines})
    assert said["simulating"] == len(lines)
    creds = launcher_credentials(tmp_path / "creds", KEY)
    argv = [str(lean_runtime / "bin" / "python"), "-I", str(ROOT / "launcher" / "optillm-proxy-launcher.py"),
            "--host", "127.0.0.1", "--port", "{port}", "--base-url", upstream.base_url, "--model", "jerry-xl"]
    proxy = start_optillm(lean_runtime, tmp_path, upstream.base_url, argv=argv, key=KEY, env_extra={
        "CREDENTIALS_DIRECTORY": str(creds), "PROXY_PLUGINS": "majority_voting",
        "PROXY_APPROACHES": "moa,bon,self_consistency,majority_voting"})
    try:
        args = ["--tasks", str(SHIPPED), *[a for m in MODELS for a in ("--model", m)], "--repeat", str(REPEAT),
                "--concurrency", "4", "--url", proxy.url, "--results", str(tmp_path / "results.jsonl"),
                "--plot", str(tmp_path / "chart.svg")]
        text = invoke(*args)
        as_json = invoke(*args, "--json")  # resumes: everything is scored, nothing is sent again
    finally:
        proxy.stop()
        stop_upstream()
    predicted = majority_vote_accuracy(P, MAJORITY_K, WRONG_VALUES)
    print(f"\nSIMULATION (not a model): each upstream sample right with p={P}, wrong ones spread over "
          f"{WRONG_VALUES} values, seed {SEED}; {len(lines)} shipped tasks x {REPEAT}.\n"
          f"predicted: base {P:.3f}, majority_voting (k={MAJORITY_K}) {predicted:.4f}\n{text.stdout}")
    assert text.exit_code == 0, text.output
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["asked"] == 0
    rows = {r["model"]: r for r in json.loads(as_json.stdout)["models"]}
    base, voting = rows["jerry-xl"], rows["majority_voting-jerry-xl"]
    for model, row in rows.items():
        assert row["samples"] == len(lines) * REPEAT and row["source"] == "proxy metrics", row
        assert math.isclose(row["upstream_calls_per_task"], CALLS[model]), row
        assert f"{row['accuracy']:.3f}" in text.stdout  # reported as measured, better or worse
    assert base["ci_low"] <= P <= base["ci_high"]
    assert voting["ci_low"] <= predicted <= voting["ci_high"], (voting, predicted)
    assert voting["ci_low"] > base["ci_high"], (voting, base)
    assert (tmp_path / "chart.svg").exists()


def test_fake_upstream_command_line_serves_the_simulation():
    """docs/eval.md's `python3 -m tools.fake_upstream 4000 --simulate eval/tasks.jsonl --p 0.6 --seed 7`,
    as printed but on a free port (4000 may be LiteLLM's): a shipped task's prompt is answered."""
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    printed = "python3 -m tools.fake_upstream 4000 --simulate eval/tasks.jsonl --p 0.6 --seed 7"
    args = printed.replace(" 4000 ", f" {port} ").split()[1:]
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        task = json.loads(SHIPPED.read_text().splitlines()[0])
        body = json.dumps({"model": "jerry-xl", "messages": [{"role": "user", "content": task["prompt"]}]}).encode()
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=5) as resp:
                    answer = json.load(resp)
                break
            except OSError:
                assert proc.poll() is None, f"exited {proc.returncode}: {proc.stderr.read().decode()[-500:]}"
                assert time.monotonic() < deadline, "no answer within 30 s"
                time.sleep(0.1)
        reply = answer["choices"][0]["message"]["content"]
        assert reply.strip() and reply != ANSWER, reply  # the simulation answered, not the default
    finally:
        proc.terminate()
        proc.wait(timeout=10)
