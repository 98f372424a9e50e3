"""The default compare panel (kept import-free so the CLI can show it without loading torch)."""
DEFAULT_STRATEGIES = ("scratch", "baseline", "linear-probe", "full", "lp-ft", "freeze:4", "lora")
DEFAULT_SIZES = (8, 16, 32, 64)
