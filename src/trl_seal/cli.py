"""The `trl-seal` console script. It is the only place where names from the command line become objects.

For now it prints help and the version; the task commands (`knowledge`, `arc`, evaluation entries) arrive with
their domains. Runs go through `accelerate launch examples/<job>.py`, never through a launcher of our own.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__

DESCRIPTION = (
    "SEAL (Self-Adapting LLMs, arXiv 2506.10943) on the Hugging Face stack: the policy writes its own fine-tuning "
    "data (self-edits), a temporary LoRA adapter applies each one, and ReST-EM reinforces those that helped."
)
EPILOG = """examples:
  accelerate launch examples/seal_toy.py                 toy secret-word run on a tiny model (CPU, < 1 min)
  accelerate launch examples/seal_toy.py --num_rounds 3  every SEALConfig field is a flag (and a YAML key)
  python -c "import trl_seal; help(trl_seal.SEALTrainer)"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-seal", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"trl-seal {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
