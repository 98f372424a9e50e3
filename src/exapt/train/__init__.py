"""Training: the loop, batches, feature caches, probe fitting, checkpoints."""
