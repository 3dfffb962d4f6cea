"""One-shot pruning: the calibration walk, its statistics, scores, allocation, the solvers and ``prune()``."""
