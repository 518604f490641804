"""What ReST-EM's kept self-edits should score on fresh inner seeds, predicted from the reward's reliability, beside
what `trl-seal rescore-self-edits` measured.

A self-edit's reward is one noisy scoring. If a share `reliability` of the within-context variance of one scoring is
signal (docs/results.md section 0 measures it: 0.69 for one gold-answer loglik scoring at the paper's inner
settings, 0.24 for one accuracy scoring), the best guess of a self-edit's fresh reward is its context's mean plus
`reliability` times its distance from that mean (regression to the mean). Selecting the best of a context's
self-edits picks partly noise, so the kept ones are predicted to fall back on fresh seeds; rescoring says how far
they did. No model is loaded: seconds.

    python benchmarks/kept_shrinkage.py --run_dir outputs/seal_squad_loglik --reliability 0.69
    # reads <run_dir>/self_edits.jsonl and, when it exists, <run_dir>/rescored/rescored.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
from statistics import mean

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from trl_seal.knowledge.plot import read_self_edit_rows  # noqa: E402
from trl_seal.knowledge.rescoring import is_valid, round_positions  # noqa: E402
from trl_seal.ledger import read_complete_lines  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="Output folder of a `trl-seal knowledge` run.")
    parser.add_argument("--reliability", type=float, default=0.69,
                        help="Share of one scoring's within-context variance that is signal (section 0: 0.69 for "
                             "one loglik scoring, 0.24 for one accuracy scoring).")
    parser.add_argument("--rescored", default=None,
                        help="rescore-self-edits records; default <run_dir>/rescored/rescored.jsonl if present.")
    args = parser.parse_args(argv)
    if not 0.0 <= args.reliability <= 1.0:
        parser.error(f"--reliability must lie in [0, 1], got {args.reliability}")
    return args


def predicted_rewards(rows: list[dict], reliability: float) -> list[dict]:
    """One entry per valid row (a reward and no reason): its round, index in the round, kept flag, run reward and
    the fresh reward predicted by shrinking it toward its context's mean."""
    indices = round_positions(rows)  # a row's index within its round: what rescored records are keyed by
    valid = [(row, index) for row, index in zip(rows, indices) if is_valid(row)]
    by_context: dict[tuple[int, int], list[float]] = {}
    for row, _ in valid:
        by_context.setdefault((row["round"], row["context"]), []).append(row["reward"])
    entries = []
    for row, index in valid:
        context_mean = mean(by_context[(row["round"], row["context"])])
        predicted = context_mean + reliability * (row["reward"] - context_mean)
        entries.append({"round": row["round"], "index": index, "kept": bool(row["kept"]), "run": row["reward"],
                        "predicted": predicted})
    return entries


def summary(entries: list[dict], fresh: dict[tuple[int, int], float] | None = None) -> list[str]:
    """Markdown rows per round and kept flag: count, run mean, predicted fresh mean and how many are predicted above
    0; with `fresh` (measured fresh means by (round, index)), only the rescored rows, beside what was measured."""
    if fresh is not None:
        entries = [e for e in entries if (e["round"], e["index"]) in fresh]
    header = "| round | self-edits | n | run mean | predicted fresh mean | predicted > 0 |"
    lines = [header + (" measured fresh mean | measured > 0 |" if fresh is not None else ""),
             "|---" * (6 + 2 * (fresh is not None)) + "|"]
    for round_index in sorted({e["round"] for e in entries}):
        for kept in (True, False):
            chosen = [e for e in entries if e["round"] == round_index and e["kept"] == kept]
            if not chosen:
                continue
            line = (f"| {round_index + 1} | {'kept' if kept else 'discarded'} | {len(chosen)} | "
                    f"{mean(e['run'] for e in chosen):+.2f} | {mean(e['predicted'] for e in chosen):+.2f} | "
                    f"{sum(e['predicted'] > 0 for e in chosen)} |")
            if fresh is not None:
                measured = [fresh[(e["round"], e["index"])] for e in chosen]
                line += f" {mean(measured):+.2f} | {sum(m > 0 for m in measured)} |"
            lines.append(line)
    return lines


def main(argv=None) -> None:
    args = parse_args(argv)
    entries = predicted_rewards(read_self_edit_rows(args.run_dir), args.reliability)
    path = args.rescored or os.path.join(args.run_dir, "rescored", "rescored.jsonl")
    print(f"Fresh rewards predicted at reliability {args.reliability}, every valid self-edit of the run:\n")
    print("\n".join(summary(entries)))
    if os.path.exists(path):
        fresh = {(r["round"], r["index"]): r["fresh_mean"] for r in read_complete_lines(path)
                 if r.get("fresh_mean") is not None}
        print(f"\nThe self-edits rescored in {path}, predicted and measured:\n")
        print("\n".join(summary(entries, fresh)))


if __name__ == "__main__":
    main()
