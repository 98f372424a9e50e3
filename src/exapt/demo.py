"""`exapt demo`: the bundled MiniLM on the bundled tweets, transfer vs. training from scratch.

Three strategies on 32 labelled tweets per class (seed 0), each tested on the same
1,000 held-out tweets, then the best run predicts two new tweets.
"""
from __future__ import annotations

from pathlib import Path

DEMO_STRATEGIES = ("linear-probe", "lp-ft", "scratch")


def demo(out: str = "runs/demo", n_per_class: int = 32, log=print) -> dict:
    from .fit import fit
    from .run import Run, is_complete

    results = {}
    for strategy in DEMO_STRATEGIES:
        path = Path(out) / strategy.replace(":", "")
        if is_complete(path):
            log(f"reusing {path}")
            run = Run.load(path)
        else:
            run = fit("tweets", strategy, "minilm-l6", n_per_class=n_per_class, seed=0, val_fraction=0,
                      max_length=64, out=path, overwrite=True, progress=True, log=log, max_test=1000)
        results[strategy] = run
    log("")
    log(f"{'strategy':<14} {'accuracy':>9} {'macro-F1':>9} {'trainable':>11} {'seconds':>8}")
    for name, run in results.items():
        m = run.metrics
        log(f"{name:<14} {m['test']['accuracy']:>9.3f} {m['test']['macro_f1']:>9.3f} "
            f"{m['trainable_parameters']:>11,} {m['train_seconds']:>8.1f}")
    best = max(results, key=lambda s: results[s].metrics["test"]["accuracy"])
    gain = results[best].metrics["test"]["accuracy"] - results["scratch"].metrics["test"]["accuracy"]
    log(f"\nbest: {best}, {gain * 100:+.1f} accuracy points over training from scratch "
        f"(n = {n_per_class} labelled tweets per class, {results[best].metrics['n_test']} test tweets)")
    import pandas as pd

    from .data.columns import Table

    new = ["@united lost my bag again, third time this year", "Just watched the google self-driving car park itself"]
    table = Table(inputs=new, labels=None, kind="text", source="demo", rows=pd.RangeIndex(1, 3).to_numpy())
    log(results[best].predict(table).drop(columns="row").to_string(index=False))
    log(f"\nruns are in {out}/; next: exapt predict {out}/{best.replace(':', '')} YOUR.csv -o predictions.csv")
    return results
