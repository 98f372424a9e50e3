"""exapt: put pretrained models to new work on small labelled data sets.

    import exapt
    run = exapt.fit("tweets", strategy="lp-ft", n_per_class=16)
    run.evaluate("test.csv")
    run.predict("new.csv")
    exapt.load_run("runs/tweets-lp-ft-s0")
    exapt.compare("tweets", strategies="linear-probe,lp-ft,scratch", n_per_class="8,32", seeds=2)
"""
import os as _os

_os.environ.setdefault("HF_HUB_OFFLINE", "1")          # never reach for a hub at run time
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from .compare import Comparison, compare  # noqa: E402
from .errors import ExaptError  # noqa: E402
from .fit import fit, resume  # noqa: E402
from .run import Run  # noqa: E402
from .version import __version__  # noqa: E402

load_run = Run.load

__all__ = ["fit", "resume", "compare", "Comparison", "load_run", "Run", "ExaptError", "__version__"]
