"""Where independent cells (compare, rank --validate, transfer-map, audit shadows) run: in this
process, or as tasks on a Ray cluster (docs/scale.md)."""
