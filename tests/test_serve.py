"""`exapt serve` as users meet it: a real server process on 127.0.0.1 (a free port), a real
HTTP client (httpx), the bundled MiniLM-L6 with a linear-probe run on real tweets.

One keyed server carries most tests (auth, bad payloads, 200 concurrent clients checked
against `exapt predict`, routing, reload, drift, graceful shutdown last); a second one
runs two workers for the kill -9 test. Every wait is bounded.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from exapt.cli import main
from exapt.data import load_data
from exapt.deploy.keys import KeyFile

from conftest import TWEETS

STARTUP_S = 150
WINDOW = 25      # inputs per drift window on the keyed server


def home_tweets(n: int, seed: int) -> list[str]:
    """Tweets drawn at random from the whole corpus: the run's own domain (the corpus is
    grouped by topic, so consecutive rows would be a domain of their own)."""
    texts = load_data("tweets").inputs
    return [texts[i] for i in np.random.default_rng(seed).choice(len(texts), n, replace=False)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, args: list[str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "exapt.cli", "serve", *args, "--port", str(self.port)],
                                     stdout=log.open("w"), stderr=subprocess.STDOUT, env=dict(os.environ))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        pytest.fail(f"server not ready in {STARTUP_S} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two linear-probe runs of MiniLM-L6: on the tweets corpus (its test split is the drift
    reference) and on a fixed 48-tweet file (a second model of the same base)."""
    root = tmp_path_factory.mktemp("serve-runs")
    if not (TWEETS / "train_n16_s1.csv").exists():
        pytest.skip("shared tweets data missing")
    assert main(["fit", "tweets", "--strategy", "linear-probe", "--n-per-class", "16", "--max-test", "300",
                 "--out", str(root / "tweets-probe"), "--quiet"]) == 0
    small_test = root / "test30.csv"
    pd.read_csv(TWEETS / "test.csv").groupby("label").head(10).to_csv(small_test, index=False)
    assert main(["fit", str(TWEETS / "train_n16_s1.csv"), "--strategy", "linear-probe", "--test", str(small_test),
                 "--out", str(root / "second"), "--quiet"]) == 0
    return root / "tweets-probe", root / "second"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    kf = KeyFile(path)
    out = {role: kf.add(role, [role]) for role in ("predict", "metrics", "admin")}
    out["slow"] = kf.add("slow", ["predict"], rate=1.0)
    out["revoked"] = kf.add("gone", ["predict"])
    kf.revoke("gone")
    out["late"] = kf.add("late", ["predict"])   # revoked while the server runs
    return path, out


@pytest.fixture(scope="module")
def server(runs, keys, tmp_path_factory):
    run, second = runs
    srv = Server([str(run), "--model", f"second={second}", "--keys", str(keys[0]), "--max-body-bytes", "65536",
                  "--window", str(WINDOW), "--rate", "1000"], tmp_path_factory.mktemp("log") / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def one_line_error(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    assert "\n" not in body["error"] and "Traceback" not in body["error"] and "File \"" not in body["error"]
    return body["error"]


# ---------------------------------------------------------------------------- auth
def test_every_auth_case(server, keys):
    _, k = keys
    url = server.url
    predict = {"inputs": ["the flight was fine"]}
    assert httpx.get(url + "/healthz").status_code == 200          # open: probes carry no key
    assert httpx.get(url + "/openapi.json").json()["info"]["title"] == "exapt serve"
    lines = set()
    for headers in ({}, auth("nonsense"), auth("exapt_000000000000_" + "x" * 43), auth(k["revoked"]),
                    {"Authorization": "Basic abc"}, auth(k["predict"][:-1] + ("B" if k["predict"].endswith("A") else "A"))):
        r = httpx.post(url + "/v1/predict", json=predict, headers=headers)
        assert r.status_code == 401, headers
        lines.add(one_line_error(r))
    assert len(lines) == 1    # no hint whether a key is missing, unknown or revoked
    assert httpx.post(url + "/v1/predict", json=predict, headers=auth(k["predict"])).status_code == 200
    assert httpx.post(url + "/v1/predict", json=predict, headers={"X-API-Key": k["predict"]}).status_code == 200
    for path in ("/metrics", "/v1/drift"):
        assert httpx.get(url + path).status_code == 401
        assert httpx.get(url + path, headers=auth(k["predict"])).status_code == 403
        assert httpx.get(url + path, headers=auth(k["metrics"])).status_code == 200
        assert httpx.get(url + path, headers=auth(k["admin"])).status_code == 200
    assert "exapt_requests_total" in httpx.get(url + "/metrics", headers=auth(k["metrics"])).text
    r = httpx.post(url + "/v1/admin/reload", json={"run": "x"}, headers=auth(k["predict"]))
    assert r.status_code == 403 and "admin" in one_line_error(r)
    # revoked while serving: refused from the next request on
    assert httpx.post(url + "/v1/predict", json=predict, headers=auth(k["late"])).status_code == 200
    KeyFile(keys[0]).revoke("late")
    assert httpx.post(url + "/v1/predict", json=predict, headers=auth(k["late"])).status_code == 401


def test_rate_limit_per_key(server, keys):
    _, k = keys
    codes = [httpx.post(server.url + "/v1/predict", json={"inputs": ["hi"]}, headers=auth(k["slow"])).status_code
             for _ in range(6)]
    assert codes[0] == 200 and 429 in codes
    # another key is not held back by this one's limit
    assert httpx.post(server.url + "/v1/predict", json={"inputs": ["hi"]}, headers=auth(k["predict"])).status_code == 200


def test_non_loopback_bind_needs_keys(runs, capsys):
    assert main(["serve", str(runs[0]), "--host", "0.0.0.0"]) == 2
    assert "--keys" in capsys.readouterr().err


# ---------------------------------------------------------------------------- bad payloads
BAD = [
    (b"xx", 422, "not valid JSON"),
    (b"", 422, "JSON object"),
    (b"[]", 422, "JSON object"),
    (b"{}", 422, "'inputs'"),
    (b'{"input": ["hi"]}', 422, "unknown field 'input'"),
    (b'{"inputs": "hi"}', 422, "must be a list"),
    (b'{"inputs": []}', 422, "empty"),
    (b'{"inputs": [""]}', 422, "text is empty"),
    (b'{"inputs": ["ok", "   "]}', 422, "row 2, column 'text': text is empty"),
    (b'{"inputs": [5]}', 422, "expected text, got a number"),
    (b'{"inputs": [null]}', 422, "got a null"),
    (b'{"inputs": [{"text": "hi"}]}', 422, "got a JSON object"),
    (b'{"inputs": [["nested"]]}', 422, "got a list"),
    (b'{"inputs": ["ok"], "model": "nope"}', 422, "unknown model 'nope'"),
    (b'{"inputs": ["ok"], "model": 5}', 422, "model"),
    (b'{"inputs": ["ok"], "extra": 1}', 422, "unknown field 'extra'"),
    (b'{"inputs": ["\xff\xfe"]}', 422, "not valid JSON"),
    (b'{"inputs": ' + b"[" * 50 + b"]" * 50 + b"}", 422, "got a list"),
    (json.dumps({"inputs": ["x"] * 257}).encode(), 413, "at most 256"),
    (json.dumps({"inputs": ["y" * 70_000]}).encode(), 413, "body over 65536 bytes"),
]


def test_bad_payloads_are_one_line_json(server, keys):
    headers = {**auth(keys[1]["predict"]), "content-type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        for body, status, words in BAD:
            r = c.post("/v1/predict", content=body)
            assert r.status_code == status, (body[:60], r.text)
            assert words in one_line_error(r), (body[:60], r.text)
        r = c.get("/v1/predict")
        assert r.status_code == 405 and one_line_error(r)
        assert c.get("/nowhere").status_code == 404
        assert c.post("/v1/predict", json={"inputs": ["still fine"]}).status_code == 200


# ---------------------------------------------------------------------------- answers
def test_200_concurrent_clients_get_exapt_predicts_answers(server, keys, runs, tmp_path):
    texts = home_tweets(200, seed=3)
    data = tmp_path / "texts.csv"
    pd.DataFrame({"text": texts}).to_csv(data, index=False)
    assert main(["predict", str(runs[0]), str(data), "-o", str(tmp_path / "pred.csv")]) == 0
    expected = pd.read_csv(tmp_path / "pred.csv")

    async def client(c, text):
        r = await c.post("/v1/predict", json={"inputs": [text]})
        return r.status_code, r.json()

    async def all_clients():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, headers=auth(keys[1]["predict"]), limits=limits,
                                     timeout=90) as c:
            return await asyncio.wait_for(asyncio.gather(*(client(c, t) for t in texts)), 120)

    results = asyncio.run(all_clients())
    assert [s for s, _ in results] == [200] * 200
    for (_, body), (_, row) in zip(results, expected.iterrows()):
        got = body["predictions"][0]
        assert got["label"] == row["prediction"]
        for c, p in got["probabilities"].items():
            assert abs(p - row[f"p_{c}"]) < 2e-4   # padding inside a merged batch moves the 6th decimal at most
    assert body["model"]["strategy"] == "linear-probe"
    metrics = httpx.get(server.url + "/metrics", headers=auth(keys[1]["metrics"])).text
    merged = [line for line in metrics.splitlines() if line.startswith("exapt_batch_requests_count")]
    passes = float(merged[0].split()[-1])
    assert passes < 200   # dynamic batching merged concurrent requests into fewer passes


def test_routing_by_model_shares_the_base_and_matches_each_run(server, keys, runs, tmp_path):
    texts = ["I hate delays", "driverless cars are coming", "great service today"]
    data = tmp_path / "three.csv"
    pd.DataFrame({"text": texts}).to_csv(data, index=False)
    assert main(["predict", str(runs[1]), str(data), "-o", str(tmp_path / "second.csv")]) == 0
    expected = pd.read_csv(tmp_path / "second.csv")
    r = httpx.post(server.url + "/v1/predict", json={"inputs": texts, "model": "second"},
                   headers=auth(keys[1]["predict"]))
    assert r.status_code == 200 and r.json()["model"]["name"] == "second"
    for got, (_, row) in zip(r.json()["predictions"], expected.iterrows()):
        assert got["label"] == row["prediction"]
        assert all(abs(p - row[f"p_{c}"]) < 2e-4 for c, p in got["probabilities"].items())
    info = httpx.get(server.url + "/v1/model", headers=auth(keys[1]["predict"])).json()["models"]
    assert info["second"]["shares_base_with"] == ["tweets-probe"]
    assert info["tweets-probe"]["test_metrics"]["accuracy"] > 0.4


# ---------------------------------------------------------------------------- drift
def wait_windows(server, key, name, n):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        d = httpx.get(server.url + "/v1/drift", headers=auth(key)).json()["models"][name]
        if d["windows"] >= n:
            return d
        time.sleep(0.2)
    pytest.fail(f"drift windows did not reach {n}")


def test_drift_alarm_on_another_domain_only(server, keys):
    """At least 20 windows of training-domain tweets (the earlier tests' and more): no alarm;
    then self-driving tweets: the alarm within two windows, one alert line in the log."""
    k = keys[1]
    name = "tweets-probe"
    d = httpx.get(server.url + "/v1/drift", headers=auth(k["metrics"])).json()["models"][name]
    served = d["windows"] * WINDOW + d["filling"]
    edge = max(20 * WINDOW, -(-served // WINDOW) * WINDOW)    # 20 windows at least, ending on a window's edge
    more = home_tweets(edge - served, seed=7)
    with httpx.Client(base_url=server.url, headers=auth(k["predict"]), timeout=60) as c:
        for i in range(0, len(more), 50):
            assert c.post("/v1/predict", json={"inputs": more[i:i + 50]}).status_code == 200
        d = wait_windows(server, k["metrics"], name, (served + len(more)) // WINDOW)
        assert d["windows"] >= 20 and d["filling"] == 0
        assert not d["alarm"] and d["alarms"] == 0, [(h["index"], h["flags"]) for h in d["history"]]
        away = load_data("tweets-self-driving").inputs[:2 * WINDOW]
        assert c.post("/v1/predict", json={"inputs": away}).status_code == 200
        d = wait_windows(server, k["metrics"], name, d["windows"] + 2)
    assert d["alarm"] and d["alarms"] == 1
    assert d["last"]["mmd_p"] < 0.01
    assert d["last"]["bbse_priors"]["neutral"] > 0.5    # self-driving tweets are mostly neutral
    metrics = httpx.get(server.url + "/metrics", headers=auth(k["metrics"])).text
    assert 'exapt_drift_alarm{model="tweets-probe"} 1.0' in metrics
    assert server.log.read_text().count("exapt drift ALERT") == 1


# ---------------------------------------------------------------------------- hot swap
def test_reload_swaps_without_dropping_requests(server, keys, runs):
    k = keys[1]
    done, codes, models = threading.Event(), [], []

    def load():
        with httpx.Client(base_url=server.url, headers=auth(k["predict"]), timeout=60) as c:
            while not done.is_set():
                r = c.post("/v1/predict", json={"inputs": ["my bag is lost", "fine"]})
                codes.append(r.status_code)
                models.append(r.json()["model"]["run"])

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    r = httpx.post(server.url + "/v1/admin/reload", json={"run": str(runs[1])}, headers=auth(k["admin"]), timeout=120)
    time.sleep(1.0)
    done.set()
    for t in threads:
        t.join(60)
    assert r.status_code == 200, r.text
    assert r.json()["now"]["run"] == str(runs[1]) and r.json()["was"]["run"] == str(runs[0])
    assert set(codes) == {200}
    assert models[-1] == str(runs[1]) and str(runs[0]) in models
    bad = httpx.post(server.url + "/v1/admin/reload", json={"run": "/no/such/run"}, headers=auth(k["admin"]))
    assert bad.status_code == 422 and "not found" in one_line_error(bad)


# ---------------------------------------------------------------------------- shutdown (last on this server)
def test_graceful_shutdown_finishes_in_flight_requests(server, keys):
    texts = home_tweets(64, seed=11)    # 64 inputs: each request is a pass of its own, queued behind the others
    results = []

    def call():
        r = httpx.post(server.url + "/v1/predict", json={"inputs": texts}, headers=auth(keys[1]["predict"]), timeout=90)
        results.append(r.status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while not results and time.monotonic() < deadline:   # once one is answered, the other five wait in the queue
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(90)
    code = server.proc.wait(60)
    assert results == [200] * 6
    assert code in (0, -signal.SIGTERM)    # uvicorn re-raises the signal it stopped for, after the graceful stop
    assert "in-flight requests finished" in server.log.read_text()


# ---------------------------------------------------------------------------- workers
def test_kill_9_of_a_worker_under_load(runs, tmp_path):
    srv = Server([str(runs[1]), "--workers", "2", "--no-monitor"], tmp_path / "workers.log")
    try:
        srv.wait_ready()
        pids = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            with httpx.Client(base_url=srv.url) as c:   # a new connection each time: either worker may answer
                r = c.get("/readyz")
                if r.status_code == 200:
                    pids.add(r.json()["pid"])
        assert len(pids) == 2, "both workers should answer"
        done, calls, killed_at = threading.Event(), [], []

        def load():
            while not done.is_set():
                start = time.monotonic()
                try:
                    with httpx.Client(base_url=srv.url, timeout=30) as c:
                        code = c.post("/v1/predict", json={"inputs": ["delayed again"]}).status_code
                except httpx.HTTPError:
                    code = "dropped"
                calls.append((start, code))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        os.kill(sorted(pids)[0], signal.SIGKILL)
        killed_at.append(time.monotonic())
        time.sleep(3.0)
        done.set()
        for t in threads:
            t.join(60)
        before = [code for start, code in calls if start < killed_at[0]]
        after = [code for start, code in calls if start > killed_at[0]]
        assert 200 in before
        # only requests the victim held when it died may be lost (one per client at most);
        # every request sent after the kill is answered by the other worker
        assert before.count("dropped") <= len(threads)
        assert len(after) >= 4 and set(after) == {200}, after
        metrics = httpx.get(srv.url + "/metrics").text   # merged over the workers (multiprocess mode)
        assert "exapt_inputs_total" in metrics and 'exapt_ready{pid="' in metrics
        assert srv.proc.poll() is None     # the supervisor is still up, and replaces the dead worker
        assert f"worker {sorted(pids)[0]} ended (exit -9); starting another" in srv.log.read_text()
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- an export folder
def test_export_folder_served_answers_as_exapt_predict_does(runs, tmp_path):
    """`exapt export` (fp32) of the tweets probe, served by onnxruntime: the same answers as
    `exapt predict EXPORT`, the export's parity on /v1/model, and a drift monitor whose
    reference is the export's embeddings of the source run's test split."""
    export = tmp_path / "probe-onnx"
    assert main(["export", str(runs[0]), "--out", str(export)]) == 0
    texts = home_tweets(30, seed=5)
    data = tmp_path / "texts.csv"
    pd.DataFrame({"text": texts}).to_csv(data, index=False)
    assert main(["predict", str(export), str(data), "-o", str(tmp_path / "pred.csv")]) == 0
    expected = pd.read_csv(tmp_path / "pred.csv")
    srv = Server([str(export), "--window", "25"], tmp_path / "export.log")
    try:
        srv.wait_ready()
        served = httpx.get(srv.url + "/v1/model", timeout=30).json()
        name = served["default"]
        model = served["models"][name]
        assert model["kind"] == "export" and model["strategy"] == "linear-probe"
        parity = json.loads((export / "export.json").read_text())["parity"]
        assert model["export_parity"] == parity and parity["fp32"]["max_abs_logit_diff"] <= 1e-4
        r = httpx.post(srv.url + "/v1/predict", json={"inputs": texts}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["export"] == str(export)
        for got, (_, row) in zip(body["predictions"], expected.iterrows()):
            assert got["label"] == row["prediction"]
            for c, p in got["probabilities"].items():
                assert abs(p - row[f"p_{c}"]) < 2e-4   # padding inside a merged batch moves the 6th decimal at most
        bad = httpx.post(srv.url + "/v1/predict", json={"inputs": ["fine", "  "]}, timeout=30)
        assert bad.status_code == 422 and "row 2" in one_line_error(bad)
        deadline, drift = time.monotonic() + 60, {}
        while time.monotonic() < deadline and not drift.get("windows"):
            drift = httpx.get(srv.url + "/v1/drift", timeout=30).json()["models"][name]
            time.sleep(0.2)
        assert drift["windows"] >= 1 and "held-out rows of tweets" in drift["reference"]
    finally:
        srv.stop()
