"""Ship a run: export (ONNX, int8), distil, prune, serve, drift (docs/ship.md, docs/serve.md)."""
