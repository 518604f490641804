"""Do two rewards agree on the same self-edits? Reliability of each, agreement between them, and what each says of
the self-edits ReST-EM kept.

Reads `rescored.jsonl` files written by `trl-seal rescore-self-edits` over the same self-edits (matched by round,
context, index and text hash), e.g. one rescored with the run's `loglik` reward and one with `specific_loglik`.
Per file: the within-context test-retest correlation of its first two fresh scorings, the signal share of one
scoring (nested variance components) and the selection gain (each context's best self-edit by the first scoring,
measured on the second, minus the context's mean there: what keeping the best buys, free of its own noise), which
need `--num_scorings` >= 2, and kept - discarded on fresh seeds. Per pair of
files: the within-context Pearson correlation of their first scorings and of their means, and the run's own
reward against each. All within context (a context's mean removed), 95 % bootstrap CIs over contexts. No model:
seconds.

    R=benchmarks/results/seal_squad_loglik
    python benchmarks/rescored_agreement.py --rescored loglik=$R/rescored/rescored.jsonl \
        --rescored specific=$R/rescored_specific/rescored.jsonl --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from itertools import combinations

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from trl_seal.knowledge.stats import (  # noqa: E402
    bootstrap_statistic,
    mean_selection_gain,
    variance_components,
    within_group_correlation,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rescored", action="append", required=True,
                        help="LABEL=PATH of a rescored.jsonl; give two or more.")
    parser.add_argument("--rounds", default=None, help="Comma list of rounds (from 1) to read; default all.")
    parser.add_argument("--draws", type=int, default=2000, help="Bootstrap resamples of contexts.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def read_rescored(path: str, rounds: set[int] | None = None) -> dict[tuple, dict]:
    """Records keyed by (round, context, index, sha256), of `rounds` (0-based) when given; a self-edit rescored twice
    keeps its last record."""
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return {(r["round"], r["context"], r["index"], r["sha256"]): r for r in records
            if rounds is None or r["round"] in rounds}


def contexts(keys, value) -> list[list]:
    """`value(key)` of every key, grouped by (round, context), in key order."""
    grouped: dict[tuple, list] = {}
    for key in sorted(keys):
        grouped.setdefault(key[:2], []).append(value(key))
    return list(grouped.values())


def kept_minus_discarded(groups: list[list[tuple[bool, float]]]) -> float:
    """Mean over contexts holding both of (kept mean - discarded mean)."""
    gaps = []
    for pairs in groups:
        kept = [v for k, v in pairs if k]
        discarded = [v for k, v in pairs if not k]
        if kept and discarded:
            gaps.append(sum(kept) / len(kept) - sum(discarded) / len(discarded))
    return sum(gaps) / len(gaps) if gaps else float("nan")


def cell(value: float, ci: tuple[float, float]) -> str:
    return f"{value:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def reliability_rows(label: str, records: dict[tuple, dict], args) -> list[str]:
    """Test-retest r, signal share and kept - discarded of one rescoring."""
    stat = lambda gs, f: (f(gs), bootstrap_statistic(gs, f, args.draws, args.seed))  # noqa: E731
    gap = stat(contexts(records, lambda k: (records[k]["kept"], records[k]["fresh_mean"])), kept_minus_discarded)
    scorings = min(len(r["fresh_rewards"]) for r in records.values())
    if scorings < 2:
        return [f"| {label} | {len(records)} | {scorings} | | | | {cell(*gap)} |"]
    retest = stat(contexts(records, lambda k: tuple(records[k]["fresh_rewards"][:2])), within_group_correlation)
    share = stat(contexts(records, lambda k: records[k]["fresh_rewards"][:scorings]),
                 lambda gs: variance_components(gs)["signal_share"])
    selection = stat(contexts(records, lambda k: tuple(records[k]["fresh_rewards"][:2])), mean_selection_gain)
    return [f"| {label} | {len(records)} | {scorings} | {cell(*retest)} | {cell(*share)} | {cell(*selection)} | "
            f"{cell(*gap)} |"]


def agreement_rows(first: tuple[str, dict], second: tuple[str, dict], args) -> list[str]:
    """Within-context correlations between two rescorings (first scorings, means) and of each with the run."""
    (a, ra), (b, rb) = first, second
    keys = sorted(set(ra) & set(rb))
    rows = []
    pairs = {
        f"{a} vs {b}, first scorings": lambda k: (ra[k]["fresh_rewards"][0], rb[k]["fresh_rewards"][0]),
        f"{a} vs {b}, means": lambda k: (ra[k]["fresh_mean"], rb[k]["fresh_mean"]),
        f"the run's reward vs {a}": lambda k: (ra[k]["run_reward"], ra[k]["fresh_mean"]),
        f"the run's reward vs {b}": lambda k: (rb[k]["run_reward"], rb[k]["fresh_mean"]),
    }
    for name, value in pairs.items():
        groups = contexts(keys, value)
        r = within_group_correlation(groups)
        ci = bootstrap_statistic(groups, within_group_correlation, args.draws, args.seed)
        rows.append(f"| {name} | {len(keys)} | {cell(r, ci)} |")
    return rows


def main(argv=None) -> str:
    args = parse_args(argv)
    rounds = {int(r) - 1 for r in args.rounds.split(",")} if args.rounds else None
    files = []
    for spec in args.rescored:
        label, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--rescored {spec!r}: write LABEL=PATH, e.g. loglik=outputs/run/rescored/rescored.jsonl")
        files.append((label, read_rescored(path, rounds)))
    lines = ["| rescoring | self-edits | scorings | test-retest r | signal share | selection gain | kept - discarded "
             "(fresh) |", "|---|---|---|---|---|---|---|"]
    for label, records in files:
        lines += reliability_rows(label, records, args)
    lines += ["", "| within-context correlation | self-edits | Pearson r [95 % CI] |", "|---|---|---|"]
    for first, second in combinations(files, 2):
        lines += agreement_rows(first, second, args)
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
