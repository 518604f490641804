"""SEAL for few-shot ARC: `accelerate launch examples/seal_arc.py [--config recipe.yaml] [--field value ...]`.

The recipe itself is `src/trl_seal/scripts/arc.py` (read it top to bottom: load, reward, inner adapter,
SEALTrainer, held-out table); it lives in the package so that `trl-seal arc` runs it after a plain `pip install`.
This file is the same entry point for a checkout. With no arguments it runs the CPU demo offline on the embedded
model, on every CPU core (set OMP_NUM_THREADS to choose), and ends with the list of its outputs; see
recipes/README.md for the paper's settings and multi-GPU launches.
"""

import sys

from trl_seal.scripts.entry import run  # CPU threads, known-harmless warnings off, then a list of the outputs

if __name__ == "__main__":
    run("arc", sys.argv[1:])
