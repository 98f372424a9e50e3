"""`exapt serve`, `exapt keys` and `exapt drift`: arguments and what they print.

Wired into `exapt.cli` with `serve_cli.add_parser(sub)` (adds all three) and the three
entries of COMMANDS (`serve`, `keys`, `drift`). Heavy imports wait for `run_*`.
"""
from __future__ import annotations

import json

from ..errors import ExaptError
from .drift import drift_report
from .keys import ROLES, KeyFile
from .monitor import DEFAULT_ALPHA, DEFAULT_PATIENCE, DEFAULT_REFERENCE, DEFAULT_WINDOW
from .serve import serve
from .serve_state import ServeOptions

DEFAULTS = ServeOptions(target="")


def add_parser(sub):
    add_serve_parser(sub)
    add_keys_parser(sub)
    return add_drift_parser(sub)


def add_serve_parser(sub):
    d = DEFAULTS
    s = sub.add_parser("serve", help="serve a run or export over HTTP: predictions, keys, metrics, drift alarms",
                       description="FastAPI + uvicorn service of a run folder (PyTorch) or an export folder "
                                   "(onnxruntime): POST /v1/predict, GET /v1/model, /v1/drift, /metrics, /healthz, "
                                   "/readyz, POST /v1/admin/reload; dynamic batching; see docs/serve.md.")
    s.add_argument("run", metavar="RUN_OR_EXPORT", help="a run folder (exapt fit --out) or an export folder")
    s.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                   help="serve another run too, chosen by the request's \"model\" field; runs of the same base "
                        "model (e.g. LoRA adapters) share its weights")
    s.add_argument("--host", default=d.host, help="address to listen on (default: 127.0.0.1; others need --keys)")
    s.add_argument("--port", type=int, default=d.port, help="port (default: 8000; 0: any free port)")
    s.add_argument("--workers", type=int, default=d.workers, help="processes sharing the port, each with its own model")
    s.add_argument("--keys", help="key file (exapt keys add NAME --keys FILE); without it no key is asked")
    s.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without --keys")
    s.add_argument("--max-batch", type=int, default=d.max_batch, help="inputs per forward pass (default: 32)")
    s.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="how long a pass waits for more requests (default: 5)")
    s.add_argument("--max-inputs", type=int, default=d.max_inputs, help="inputs per request, 413 above (default: 256)")
    s.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="request body limit, 413 above")
    s.add_argument("--rate", type=float, default=d.rate,
                   help="requests per second per key, 429 above (default: 50; 0: no limit; `keys add --rate` per key)")
    s.add_argument("--log-requests", metavar="FILE", help="append one JSON line per request (default: off)")
    s.add_argument("--log-inputs", action="store_true", help="log raw inputs instead of their sha256")
    s.add_argument("--no-monitor", action="store_true", help="no drift monitoring")
    add_drift_options(s)
    return s


def add_drift_options(s) -> None:
    s.add_argument("--window", type=int, default=DEFAULT_WINDOW, help=f"inputs per drift window (default: {DEFAULT_WINDOW})")
    s.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help=f"a window's test level (default: {DEFAULT_ALPHA})")
    s.add_argument("--patience", type=int, default=DEFAULT_PATIENCE,
                   help=f"flagged windows in a row that raise the alarm (default: {DEFAULT_PATIENCE})")
    s.add_argument("--drift-test", choices=("mmd", "auc"), default="mmd",
                   help="input drift by MMD permutation test, or domain-classifier AUC (default: mmd)")
    s.add_argument("--reference-size", type=int, default=DEFAULT_REFERENCE,
                   help=f"held-out rows of the run's data in the reference (default: {DEFAULT_REFERENCE})")


def add_keys_parser(sub):
    k = sub.add_parser("keys", help="API keys of exapt serve: add (printed once), revoke, list",
                       description="The key file keeps salted scrypt hashes only; a key is shown once, when added.")
    k.add_argument("action", choices=("add", "revoke", "list"))
    k.add_argument("name", nargs="?", help="the key's name (add, revoke)")
    k.add_argument("--keys", required=True, help="key file (created by the first add)")
    k.add_argument("--role", default="predict", help=f"comma-separated roles: {', '.join(ROLES)} (default: predict)")
    k.add_argument("--rate", type=float, help="this key's requests per second (default: the server's --rate)")
    return k


def add_drift_parser(sub):
    d = sub.add_parser("drift", help="drift of a logged request stream against a run's data -> report and figure",
                       description="Replays a JSONL stream (serve --log-requests --log-inputs, or lines with "
                                   "\"inputs\" / \"text\") through the run in windows, as the server's monitor does.")
    d.add_argument("run", help="the run folder")
    d.add_argument("requests", help="JSONL file of requests")
    add_drift_options(d)
    d.add_argument("--out", help="report folder (default: runs/drift-<run name>)")
    d.add_argument("--overwrite", action="store_true", help="replace an earlier drift report in --out")
    d.add_argument("--json", action="store_true", help="print drift.json instead of the summary")
    return d


def _models(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ExaptError(f"--model {pair}: give NAME=FOLDER")
        out[name.strip()] = folder.strip()
    return out


def run_serve(args) -> None:
    opts = ServeOptions(target=args.run, models=_models(args.model), host=args.host, port=args.port,
                        workers=args.workers, keys=args.keys, insecure=args.insecure, max_batch=args.max_batch,
                        max_wait_ms=args.max_wait_ms, max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs,
                        rate=args.rate, log_requests=args.log_requests, log_inputs=args.log_inputs,
                        monitor=not args.no_monitor, window=args.window, alpha=args.alpha, patience=args.patience,
                        drift_test=args.drift_test, reference_size=args.reference_size)
    serve(opts)


def run_keys(args) -> None:
    keys = KeyFile(args.keys)
    if args.action == "list":
        for e in keys.listing():
            state = f"revoked {e['revoked']}" if e["revoked"] else "live"
            rate = f", {e['rate']:g}/s" if e.get("rate") else ""
            print(f"{e['name']:<16} {','.join(e['roles']):<24} {state} (created {e['created']}{rate})")
        return
    if not args.name:
        raise ExaptError(f"exapt keys {args.action}: give the key's NAME")
    if args.action == "add":
        key = keys.add(args.name, [r.strip() for r in args.role.split(",") if r.strip()], args.rate)
        print(key)
        print(f"(shown once: {args.keys} keeps only its salted hash)", flush=True)
    else:
        n = keys.revoke(args.name)
        print(f"revoked {args.name} ({n} key{'s' if n > 1 else ''})")


def run_drift(args) -> None:
    rep = drift_report(args.run, args.requests, window=args.window, alpha=args.alpha, patience=args.patience,
                       test=args.drift_test, reference_size=args.reference_size, out=args.out,
                       overwrite=args.overwrite)
    if args.json:
        print(json.dumps(rep.data, indent=1))
    else:
        print(rep.summary())
