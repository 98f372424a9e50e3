"""`exapt augment`: synthetic examples by masked-LM infilling of real ones, weighted in `fit`."""
