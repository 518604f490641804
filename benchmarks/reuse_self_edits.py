"""Evaluate recorded self-edits again under other settings, without their writers' weights.

`trl-seal eval-knowledge` reads a writer's self-edits back from its output folder only when that folder's score log
has the same settings. To score the same self-edits another way (e.g. `--keep_specific_loglik true`, other
conditions), this starts the new output folder's log with the new settings' fingerprint and the old evaluation's
`self_edits.json`; `trl-seal eval-knowledge` with the same arguments then resumes from it and writes nothing new.
Every self-edit list must cover the new run's passages (same passage file, offset and count).

    python benchmarks/reuse_self_edits.py --from_dir benchmarks/results/seal_squad_loglik/eval -- \
        --config recipes/knowledge/cpu_smollm2_squad_loglik_eval.yaml --conditions passage,self_edits \
        --self_edit_model model,outputs/seal_squad_loglik --keep_specific_loglik true \
        --output_dir outputs/eval_specific
    trl-seal eval-knowledge <the same arguments after -->
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from trl_seal.knowledge.score_log import SCORES_FILE, SELF_EDITS_FILE  # noqa: E402
from trl_seal.scripts.eval_knowledge import fingerprint, make_parser, select_passages  # noqa: E402


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from_dir", required=True, help="Output folder of the evaluation that wrote the self-edits.")
    ours = parser.parse_args(argv[:split])
    args, inner = make_parser().parse_args_and_config(argv[split + 1 :])[:2]
    source = os.path.join(ours.from_dir, SELF_EDITS_FILE)
    if not os.path.exists(source):
        raise SystemExit(f"{source}: no recorded self-edits there; pass the --output_dir of an eval-knowledge run.")
    passages = select_passages(args)
    saved = json.load(open(source, encoding="utf-8"))
    short = {name: len(edits) for name, edits in saved.items() if len(edits) != len(passages)}
    if short:
        raise SystemExit(f"{source} holds self-edits for {sorted(set(short.values()))} passages, the new run "
                         f"evaluates {len(passages)}: use the same passages, offset and count.")
    if os.path.exists(os.path.join(args.output_dir, SCORES_FILE)):
        raise SystemExit(f"{args.output_dir} already holds a score log: pass a new --output_dir.")
    header = {"fingerprint": fingerprint(args, inner.to_config(), passages, "cpu")}
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, SCORES_FILE), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(header) + "\n")
    shutil.copy(source, os.path.join(args.output_dir, SELF_EDITS_FILE))
    print(f"{args.output_dir}: a score log with {len(saved)} writers' self-edits; run trl-seal eval-knowledge with "
          "the same arguments to evaluate them.")
    return header


if __name__ == "__main__":
    main()
