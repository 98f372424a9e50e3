"""`exapt serve` on loopback: latency at 1 client, dynamic batching on vs off at 16 clients,
LitServe (its own batching) serving the same run, and the cost of drift monitoring.

    python benchmarks/serve_bench.py --quick            # a smoke run, a few minutes
    python benchmarks/serve_bench.py --run RUN          # the full one, alone on the machine
    python benchmarks/serve_bench.py --json out.json

The model is a MiniLM-L6 linear-probe run on real tweets (fitted here unless --run is
given), served from its run folder (PyTorch), or --run an `exapt export` folder (onnxruntime;
the issue's latency targets are for an int8 export). Each setting
starts its own server process; requests are single short tweets, as an application sends
them. Timings on a shared machine are not final.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TWEETS = ROOT.parent / "shared" / "data" / "tweets"
LITSERVE_APP = '''
import sys
import litserve as ls
from exapt.deploy.serving_model import load_predictor

class RunAPI(ls.LitAPI):
    def setup(self, device):  # a run folder or an export folder, as `exapt serve` takes
        self.p = load_predictor(sys.argv[1], "run")
    def decode_request(self, request):
        return request["inputs"][0]
    def predict(self, texts):
        items = self.p.prepare(list(texts))
        return self.p.answers(self.p.outputs(items)["logits"])
    def encode_response(self, output):
        return {"predictions": [output]}

if __name__ == "__main__":
    api = RunAPI(max_batch_size=int(sys.argv[3]), batch_timeout=float(sys.argv[4]))
    ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1).run(
        host="127.0.0.1", port=int(sys.argv[2]), generate_client_file=False, log_level="warning")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def fit_run(folder: Path) -> Path:
    out = folder / "run"
    subprocess.run([sys.executable, "-m", "exapt.cli", "fit", str(TWEETS / "train_n16_s0.csv"), "--strategy",
                    "linear-probe", "--out", str(out), "--quiet"], check=True, env=env())
    return out


def start(cmd: list[str], ready_path: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(cmd + ["--port", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env())
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url + ready_path, log, "server")
    return proc, url


def wait_ready(proc: subprocess.Popen, ready_url: str, log: Path, who: str) -> None:
    """Until `ready_url` answers 200 (5 minutes at most); a server that exits or never gets
    ready ends the benchmark with the tail of its log."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{who} exited: {log.read_text()[-1500:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{who} not ready: {log.read_text()[-1500:]}")


async def load(url: str, path: str, texts: list[str], clients: int, requests: int) -> dict:
    latencies: list[float] = []
    queue = list(range(requests))

    async def client(c):
        while queue:
            i = queue.pop()
            t = time.perf_counter()
            r = await c.post(path, json={"inputs": [texts[i % len(texts)]]})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as c:
        for _ in range(min(8, requests)):   # warm the connection pool and the model
            (await c.post(path, json={"inputs": [texts[0]]})).raise_for_status()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": requests, "throughput_rps": round(requests / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def inputs_per_pass(metrics: str) -> float | None:
    """Mean inputs per forward pass, from the server's own histogram (what batching achieved)."""
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith(("exapt_batch_inputs_sum", "exapt_batch_inputs_count"))}
    n = values.get("exapt_batch_inputs_count")
    return round(values["exapt_batch_inputs_sum"] / n, 2) if n else None


def measure(name: str, cmd: list[str], ready: str, path: str, texts, clients, requests, folder: Path) -> dict:
    proc, url = start(cmd, ready, folder / f"{name}.log")
    try:
        row = asyncio.run(load(url, path, texts, clients, requests))
        row["inputs_per_pass"] = inputs_per_pass(httpx.get(url + "/metrics", timeout=30).text)
    finally:
        proc.terminate()
        proc.wait(60)
    row["setting"] = name
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a text run folder (default: fit a MiniLM-L6 linear probe on 48 tweets)")
    ap.add_argument("--quick", action="store_true", help="few requests: checks the benchmark works")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    run = Path(a.run) if a.run else fit_run(folder)
    texts = [line.split(",", 1)[1].strip('"') for line in (TWEETS / "test.csv").read_text().splitlines()[1:400]]
    n1, n16 = (40, 160) if a.quick else (500, 2000)
    serve = [sys.executable, "-m", "exapt.cli", "serve", str(run)]
    app = folder / "lit_app.py"
    app.write_text(LITSERVE_APP)
    rows = [
        measure("exapt, 1 client", serve + ["--no-monitor"], "/readyz", "/v1/predict", texts, 1, n1, folder),
        measure("exapt, batching off, 16 clients", serve + ["--no-monitor", "--max-batch", "1", "--max-wait-ms", "0"],
                "/readyz", "/v1/predict", texts, 16, n16, folder),
        measure("exapt, batching on, 16 clients", serve + ["--no-monitor"], "/readyz", "/v1/predict", texts, 16, n16,
                folder),
        measure("exapt, batching + monitoring, 16 clients", serve + ["--window", "200"], "/readyz", "/v1/predict",
                texts, 16, n16, folder),
    ]
    rows.append(measure_litserve(app, run, texts, n16, folder))
    on, off = rows[2]["throughput_rps"], rows[1]["throughput_rps"]
    print(f"\nbatching on / off at 16 clients: {on / off:.2f}x; exapt / litserve: "
          f"{on / rows[4]['throughput_rps']:.2f}x; monitoring costs "
          f"{100 * (1 - rows[3]['throughput_rps'] / on):.1f}% of throughput")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")


def measure_litserve(app: Path, run: Path, texts, requests: int, folder: Path) -> dict:
    """LitServe 0.2 with its own batching (32 inputs / 5 ms), the same predictor inside."""
    port = free_port()
    cmd = [sys.executable, str(app), str(run), str(port), "32", "0.005"]
    log = folder / "litserve.log"
    # its own session: LitServer starts worker processes that a plain terminate would orphan
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env(), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url + "/health", log, "litserve")
    try:
        row = asyncio.run(load(url, "/predict", texts, 16, requests))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    row["setting"] = "litserve, batching 32 / 5 ms, 16 clients"
    print(json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main()
