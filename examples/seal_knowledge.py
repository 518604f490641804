"""SEAL for knowledge incorporation: `accelerate launch examples/seal_knowledge.py [--config recipe.yaml] [--field value ...]`.

The recipe itself is `src/trl_seal/scripts/knowledge.py` (read it top to bottom: load, reward, inner adapter, SEALTrainer,
held-out table); it lives in the package so that `trl-seal knowledge` runs it after a plain `pip install`. This file is
the same entry point for a checkout. With no arguments it runs the CPU demo offline on the embedded model; see
recipes/README.md for the paper's settings and multi-GPU launches.
"""

import sys

from trl_seal.scripts.common import parse_script_arguments
from trl_seal.scripts.knowledge import main, make_parser

if __name__ == "__main__":
    main(*parse_script_arguments(make_parser(), sys.argv[1:]))
