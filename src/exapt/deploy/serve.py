"""`exapt serve`: checks before anything starts, then uvicorn with one or N workers.

With `--workers N`, the port is bound once and N spawned processes share the socket
(each loads its own model); a worker that dies, even by kill -9, is replaced while the
others keep answering (`Supervisor`). Prometheus metrics are merged across workers through
a PROMETHEUS_MULTIPROC_DIR made here.
"""
from __future__ import annotations

import ipaddress
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from ..errors import ExaptError
from ..run_folder import RunFolder
from .keys import KeyFile
from .serve_state import OPTIONS_ENV, ServeOptions
from .serving_model import is_export

APP = "exapt.deploy.serve_app:app_from_environment"
GRACEFUL_SECONDS = 30   # in-flight requests get this long to finish on SIGTERM / Ctrl-C


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_options(opts: ServeOptions) -> None:
    """Every refusal before a model is loaded or a port is bound."""
    for name, folder in {"RUN": opts.target, **{f"--model {n}": p for n, p in opts.models.items()}}.items():
        p = Path(folder)
        if not p.is_dir():
            raise ExaptError(f"{name} {folder}: no such run or export folder")
        if not is_export(p) and not RunFolder(p).config.is_file():
            raise ExaptError(f"{name} {folder}: neither a run folder (exapt fit --out) nor an export folder (export.json)")
    if not is_loopback(opts.host) and not opts.keys and not opts.insecure:
        raise ExaptError(f"--host {opts.host} is reachable from other machines: give --keys FILE (see `exapt keys add`), "
                         "or --insecure to serve without keys")
    if opts.keys:
        if not Path(opts.keys).is_file():
            raise ExaptError(f"--keys {opts.keys}: no such key file; create one with `exapt keys add NAME --keys {opts.keys}`")
        KeyFile(opts.keys).read()
    checks = [(opts.workers >= 1, "--workers: give 1 or more"), (opts.max_batch >= 1, "--max-batch: give 1 or more"),
              (0 <= opts.max_wait_ms <= 10_000, "--max-wait-ms: give 0 to 10000"),
              (opts.max_inputs >= 1, "--max-inputs: give 1 or more"),
              (opts.max_body_bytes >= 1024, "--max-body-bytes: give at least 1024"),
              (0 <= opts.port <= 65535, f"--port {opts.port}: give 0 to 65535"),
              (opts.window >= 10, "--window: give at least 10 inputs per drift window"),
              (0 < opts.alpha < 1, "--alpha: give a level between 0 and 1"),
              (opts.patience >= 1, "--patience: give 1 or more windows"),
              (opts.drift_test in ("mmd", "auc"), "--drift-test: mmd or auc"),
              (opts.rate >= 0, "--rate: give requests per second per key, 0 for no limit")]
    for ok, message in checks:
        if not ok:
            raise ExaptError(message)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ExaptError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def uvicorn_config(workers: int = 1):
    import uvicorn  # heavy: imported on first use

    # the app is named, not imported: uvicorn builds it (in each worker), and `exapt --help` stays light
    return uvicorn.Config(APP, factory=True, workers=workers, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=GRACEFUL_SECONDS, server_header=False)


def run_worker(sock: socket.socket) -> None:
    """One worker process: its own app and model, on the supervisor's listening socket."""
    import uvicorn  # heavy: imported on first use

    uvicorn.Server(uvicorn_config()).run(sockets=[sock])


def serve(opts: ServeOptions, log=print) -> None:
    """Run until SIGTERM / Ctrl-C; in-flight requests finish first."""
    import uvicorn  # heavy: imported on first use

    check_options(opts)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sock = bind(opts.host, opts.port)
    where = f"http://{opts.host if ':' not in opts.host else f'[{opts.host}]'}:{sock.getsockname()[1]}"
    log(f"exapt serve: {opts.target} on {where} ({opts.workers} worker{'s' if opts.workers > 1 else ''}; "
        f"docs at {where}/docs; ready when {where}/readyz answers 200)", flush=True)
    os.environ[OPTIONS_ENV] = opts.to_json()
    if opts.workers == 1:
        uvicorn.Server(uvicorn_config()).run(sockets=[sock])
        return
    metrics_dir = tempfile.mkdtemp(prefix="exapt-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        Supervisor(sock, opts.workers).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class Supervisor:
    """N worker processes on one listening socket; a worker that dies (kill -9 included) is
    replaced, the others keep answering; SIGTERM / SIGINT stop them all gracefully.

    Not uvicorn's own supervisor: it pings workers over a pipe whose far end the parent
    also holds, so a killed worker's ping waits out the whole health-check timeout, and a
    short timeout kills workers that are still importing torch on a busy machine."""

    def __init__(self, sock: socket.socket, n: int):
        self.sock, self.n = sock, n
        self.context = multiprocessing.get_context("spawn")
        self.stop = False

    def start_one(self):
        p = self.context.Process(target=run_worker, args=(self.sock,), daemon=False)
        p.start()
        return p

    def run(self) -> None:
        from prometheus_client.multiprocess import mark_process_dead  # heavy: imported on first use

        def on_signal(signum, _frame):
            self.stop = True

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        workers = [self.start_one() for _ in range(self.n)]
        try:
            while not self.stop:
                time.sleep(0.2)
                for i, p in enumerate(workers):
                    if not p.is_alive() and not self.stop:
                        logging.getLogger("exapt.serve").warning(
                            "exapt serve: worker %s ended (exit %s); starting another", p.pid, p.exitcode)
                        mark_process_dead(p.pid)
                        workers[i] = self.start_one()
        finally:
            for p in workers:
                if p.is_alive():
                    p.terminate()           # SIGTERM: uvicorn finishes in-flight requests
            deadline = time.monotonic() + GRACEFUL_SECONDS + 5
            for p in workers:
                p.join(max(0.1, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join(5)
            for s, handler in previous.items():
                signal.signal(s, handler)
