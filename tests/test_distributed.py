"""Data-parallel training: 2 CPU processes (gloo) under torchrun reproduce 1 process, on one
node and across two "nodes" (two torchrun launchers meeting at a c10d rendezvous on loopback),
including a 2-node run killed mid-training and resumed from its multi-process checkpoint.

Tolerance: every saved weight within 1e-5 of the single-process run (seen: 1.5e-8) and
identical test metrics. The model has dropout off: with dropout on, each process draws
its own masks, so runs agree only statistically.
"""
import os
import socket
import subprocess
import sys
import time

from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit_args(data, test, model, out):
    return ["fit", str(data), "--model", str(model), "--strategy", "full", "--epochs", "2", "--batch-size", "8",
            "--val-fraction", "0", "--test", str(test), "--out", str(out)]


def test_two_gloo_processes_match_one(tmp_path, tiny_bert, tweets_small, tweets_test_small):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, multi = tmp_path / "single", tmp_path / "multi"
    subprocess.run([sys.executable, "-m", "exapt.cli", *_fit_args(tweets_small, tweets_test_small, tiny_bert, single)],
                   check=True, env=env, capture_output=True, text=True, timeout=300)
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "exapt.cli",
         *_fit_args(tweets_small, tweets_test_small, tiny_bert, multi)],
        env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert "data-parallel over 2 processes" in launched.stdout
    assert launched.stdout.count("test: accuracy") == 1  # rank 0 alone reports and writes
    a, b = load_file(single / "weights.safetensors"), load_file(multi / "weights.safetensors")
    assert set(a) == set(b)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, f"2-process weights differ from 1-process by {worst}"
    # and the two really trained: weights moved away from the base model
    base = load_file(tiny_bert / "model.safetensors")
    moved = max(float((a[k] - base[k.removeprefix("backbone.model.")]).abs().max())
                for k in a if k.removeprefix("backbone.model.") in base)
    assert moved > 1e-4
    import json
    assert json.loads((single / "metrics.json").read_text())["test"] == json.loads((multi / "metrics.json").read_text())["test"]


def _node(port: int, args: list, env: dict) -> subprocess.Popen:
    """One "node": a torchrun launcher with 1 process, meeting the other at a c10d rendezvous."""
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "exapt-test",
         "-m", "exapt.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def _kill_tree(pid: int) -> None:
    """SIGKILL a launcher and its workers, as a lost node would die. torchrun may start its
    workers in sessions of their own, so killing the launcher's process group can leave a
    worker that goes on to finish the fit (and remove the checkpoint the test waits for)."""
    import psutil  # accelerate's dependency

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def _two_nodes(args: list, env: dict) -> list[tuple[int, str, str]]:
    port = _free_port()
    nodes = [_node(port, args, env) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in nodes]
    return [(p.returncode, out, err) for p, (out, err) in zip(nodes, outputs)]


def test_two_nodes_match_one_process_and_resume_from_their_checkpoint(tmp_path, tiny_bert, tweets_small,
                                                                      tweets_test_small):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, multi = tmp_path / "single", tmp_path / "multi"

    def args(out):  # enough epochs that the kill below lands between the first checkpoint and the end
        return [*_fit_args(tweets_small, tweets_test_small, tiny_bert, out), "--epochs", "6"]

    subprocess.run([sys.executable, "-m", "exapt.cli", *args(single)], check=True, env=env, capture_output=True,
                   text=True, timeout=300)
    # both nodes train until the first checkpoint is on disk; then both are killed, as a lost cluster would be
    port = _free_port()
    nodes = [_node(port, args(multi), env) for _ in range(2)]
    deadline = time.monotonic() + 300
    while not (multi / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
        if any(p.poll() is not None for p in nodes):  # a node that ended early: its error is the answer
            break
        time.sleep(0.02)
    for p in nodes:
        _kill_tree(p.pid)
    errors = [(p.returncode, *(x[-1500:] for x in p.communicate())) for p in nodes]
    assert (multi / "checkpoint.safetensors").exists() and not (multi / "metrics.json").exists(), errors
    # the same two nodes continue it
    finished = _two_nodes(["fit", "--resume", str(multi)], env)
    assert all(code == 0 for code, _, _ in finished), [err[-2000:] for _, _, err in finished]
    out = "".join(o for _, o, _ in finished)
    assert "data-parallel over 2 processes" in out and "resumed from" in out
    assert out.count("test: accuracy") == 1  # rank 0 alone reports and writes
    a, b = load_file(single / "weights.safetensors"), load_file(multi / "weights.safetensors")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, f"2-node resumed weights differ from 1-process by {worst}"
    import json
    assert json.loads((single / "metrics.json").read_text())["test"] == json.loads((multi / "metrics.json").read_text())["test"]
