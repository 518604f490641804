"""Few-shot ARC: grids as text, invertible augmentations, test-time-training data, self-edit configurations, augmented
inference with voting, `ARCReward` and the evaluation harness (paper §4.1, Table 1)."""
