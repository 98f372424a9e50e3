"""One way to turn a matplotlib figure into PNG bytes (reports embed them, commands save them)."""
from __future__ import annotations

import io


def png_bytes(fig, *, dpi: int = 110, tight: bool = False) -> bytes:
    """The figure as PNG bytes on white, without a 'Software' stamp (so reruns are identical); closes it."""
    import matplotlib.pyplot as plt  # heavy: imported on first use

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Software": None},
                    **({"bbox_inches": "tight"} if tight else {}))
    finally:
        plt.close(fig)
    return buf.getvalue()
