"""The training scripts behind `trl-seal knowledge` and `trl-seal arc` (and `examples/seal_*.py`)."""
