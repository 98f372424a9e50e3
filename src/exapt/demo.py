"""`exapt demo`: `exapt compare` on the bundled tweets with the bundled MiniLM.

A panel small enough for ~10 minutes on 2 CPU cores: a linear probe, LP-FT, LoRA, the
classical baseline (TF-IDF + logistic regression) and the same network trained from
scratch, at 8 and 32 labelled tweets per class, 2 seeds each,
tested on the same 1,000 held-out tweets. It ends by saying where the report is.
"""
from __future__ import annotations

from .compare import compare

DEMO_PANEL = dict(strategies="linear-probe,lp-ft,lora,baseline,scratch", n_per_class="8,32", seeds=2)


def demo(out: str = "runs/demo", log=print):
    command = (f"exapt compare tweets --strategies {DEMO_PANEL['strategies']} --n-per-class "
               f"{DEMO_PANEL['n_per_class']} --seeds {DEMO_PANEL['seeds']} --max-test 1000 --max-length 64 --out {out}")
    log(f"demo: {command}")
    result = compare("tweets", "minilm-l6", **DEMO_PANEL, out=out, max_test=1000, max_length=64, log=log,
                     command=command)
    best = (result.recommendation or {}).get("strategy", "lp-ft")
    log(f"\nopen {result.files['html']} in a browser (or read {result.files['md']});")
    log(f"next: exapt fit YOUR.csv --strategy {best} --text TEXT_COLUMN --label LABEL_COLUMN")
    return result
