"""Evaluate recorded self-edits again under other settings, without their writers' weights.

`trl-seal eval-knowledge` reads a writer's self-edits back from its output folder only when that folder's score log
has the same settings. To score the same self-edits another way (e.g. `--keep_specific_loglik true`, other
conditions), this starts the new output folder's log with the new settings' fingerprint and the old evaluation's
`self_edits.json`; `trl-seal eval-knowledge` with the same arguments then resumes from it and writes nothing new.
Every self-edit list must cover the new run's passages (same passage file, offset and count).

`--carry_scores` also carries the old log's scores of some conditions (e.g. the passage alone and the untrained
writer's self-edits, when a new writer is compared against them), so that the new run measures only what is new.
It refuses unless the two evaluations agree on everything a score depends on but the list of conditions and writers:
each adapter's seed is its self-edit's index within its passage, so a carried score is what the new run would measure
(up to the last bits of the batched bfloat16 arithmetic, which can differ with the batch's other members).

    python benchmarks/reuse_self_edits.py --from_dir benchmarks/results/seal_squad_loglik/eval -- \
        --config recipes/knowledge/cpu_smollm2_squad_loglik_eval.yaml --conditions passage,self_edits \
        --self_edit_model model,outputs/seal_squad_loglik --keep_specific_loglik true \
        --output_dir outputs/eval_specific
    trl-seal eval-knowledge <the same arguments after -->

    # a new writer against the scores already measured (docs/results.md 0i):
    python benchmarks/reuse_self_edits.py --from_dir outputs/eval_specific \
        --carry_scores "passage,self_edits (model)" -- \
        --config recipes/knowledge/cpu_smollm2_squad_specific_eval.yaml \
        --self_edit_model model,outputs/seal_squad_specific/checkpoint-8,outputs/seal_squad_specific
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from trl_seal.knowledge.score_log import SCORES_FILE, SELF_EDITS_FILE  # noqa: E402
from trl_seal.scripts.eval_knowledge import (  # noqa: E402
    fingerprint,
    make_parser,
    select_passages,
    writer_conditions,
)


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from_dir", required=True, help="Output folder of the evaluation that wrote the self-edits.")
    parser.add_argument("--carry_scores", default="",
                        help="Comma list of conditions (as named in the old log, e.g. 'passage,self_edits (model)') "
                             "whose recorded scores the new run reuses instead of measuring them again.")
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
    carried = _carried_rows(ours, header["fingerprint"], _condition_names(args)) if ours.carry_scores else []
    unwritten = sorted({row["condition"] for row in carried if row["condition"].startswith("self_edits")} - set(saved))
    if unwritten:  # the new run would write other self-edits for them than those the carried scores measured
        raise SystemExit(f"{source} lacks the self-edits behind the carried scores of {unwritten}: carry only writers "
                         "whose self-edits that folder recorded.")
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, SCORES_FILE), "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in [header, *carried]))
    shutil.copy(source, os.path.join(args.output_dir, SELF_EDITS_FILE))
    print(f"{args.output_dir}: a score log with {len(saved)} writers' self-edits and {len(carried)} carried scores; "
          "run trl-seal eval-knowledge with the same arguments to evaluate the rest.")
    return header


# What may differ between the two evaluations when scores are carried: which conditions and writers they run, and
# the path of the passage file (the passages themselves are compared by id).
MAY_DIFFER = ("conditions", "self_edit_model", "passages")


def differing_settings(old: dict, new: dict, may_differ=MAY_DIFFER, compare_passages: bool = True) -> list[str]:
    """The settings two score logs' fingerprints set differently: every `args` field but `may_differ`, every other
    top-level key (the inner loop's config; the passage ids unless `compare_passages` is false)."""
    old_args, new_args = old.get("args", {}), new.get("args", {})
    differ = sorted(key for key in set(old_args) | set(new_args)
                    if key not in may_differ and old_args.get(key) != new_args.get(key))
    skip = {"args", *(() if compare_passages else ("passages",))}
    return differ + sorted(key for key in set(old) | set(new) if key not in skip and old.get(key) != new.get(key))


def _carried_rows(ours, new: dict, new_names: list[str]) -> list[dict]:
    """The old log's rows of the `--carry_scores` conditions on the new run's passages, after checking that a score
    depends on nothing the two runs set differently."""
    path = os.path.join(ours.from_dir, SCORES_FILE)
    if not os.path.exists(path):
        raise SystemExit(f"{path}: no recorded scores to carry; drop --carry_scores or pass an eval-knowledge folder.")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    differ = differing_settings(json.loads(lines[0])["fingerprint"], new, MAY_DIFFER)
    if differ:
        raise SystemExit(f"{path} was scored with other settings ({', '.join(differ)}): its scores are not what the "
                         "new run would measure. Drop --carry_scores, or match those settings.")
    wanted = [name.strip() for name in ours.carry_scores.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in new_names]
    if unknown:
        raise SystemExit(f"--carry_scores {unknown}: the new run has no such condition; its conditions are "
                         f"{new_names}.")
    rows = [row for row in map(json.loads, lines[1:]) if row["condition"] in wanted]
    ids = set(new["passages"])
    rows = list({(row["condition"], row["passage_id"]): row for row in rows if row["passage_id"] in ids}.values())
    for name in wanted:
        found = sum(row["condition"] == name for row in rows)
        if not found:
            raise SystemExit(f"{path} holds no scores of {name!r}: carry only conditions that run measured.")
        print(f"{name}: {found} of {len(ids)} passages carried" + ("" if found == len(ids) else
                                                                      "; the new run measures the rest"))
    return rows


def _condition_names(args) -> list[str]:
    """The conditions as the new run will name them (one `self_edits (<writer>)` per writer when there are several)."""
    names = list(writer_conditions(args.self_edit_model))
    return [name for c in args.conditions.split(",") if c.strip()
            for name in (names if c.strip() == "self_edits" else [c.strip()])]


if __name__ == "__main__":
    main()
