"""`trl-seal rescore-self-edits`: did a finished knowledge run keep better self-edits, or luckier ones?

Retrains every scored self-edit of a `trl-seal knowledge` run `--num_scorings` times with fresh inner seeds and
compares, per round, the self-edits ReST-EM kept with those it discarded (kept mean - discarded mean within each
context, 95 % bootstrap CI over contexts). The reward and inner-loop settings default to the run's (read from its
`seal_ledger/config.json`); each round's self-edits adapt the policy that scored them (the run's round
checkpoints). Writes rescored.jsonl (resumable: a restart skips done self-edits), rescored.md and config.json.

    trl-seal rescore-self-edits --run_dir outputs/seal_squad --passages outputs/seal_squad/split/train.json
    trl-seal rescore-self-edits --run_dir outputs/seal_squad --passages train.json --rounds 2 --max_contexts 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields

from trl import TrlParser

from trl_seal.inner.config import INNER_PREFIX, InnerArguments
from trl_seal.knowledge import rescoring
from trl_seal.knowledge.plot import read_self_edit_rows
from trl_seal.knowledge.prompts import DOCUMENT_LAYOUTS
from trl_seal.ledger import LEDGER_FOLDER, append_jsonl, read_complete_lines, write_json_atomically
from trl_seal.scripts.common import ARGS_FILE
from trl_seal.scripts.knowledge import GRADERS, KnowledgeArguments, knowledge_reward

# Settings that choose which self-edits are rescored (or how they are summarised), not how: a restart may change them.
SELECTION_FIELDS = ("rounds", "max_contexts", "kept_contexts_only", "output_dir", "bootstrap_draws")


@dataclass
class RescoreArguments:
    run_dir: str | None = field(default=None, metadata={"help": "Output folder of the `trl-seal knowledge` run."})
    passages: str | None = field(
        default=None, metadata={"help": "The passage file the run trained on (its --passages); default: the run's "
                                "recorded one, else the embedded passages."}
    )
    num_scorings: int = field(default=3, metadata={"help": "Fresh scorings per self-edit, each with its own seed."})
    rounds: str | None = field(default=None, metadata={"help": "Comma list of rounds (from 1): 1,2; default all."})
    max_contexts: int | None = field(default=None, metadata={"help": "Rescore only the first N contexts per round."})
    kept_contexts_only: bool = field(
        default=False, metadata={"help": "Rescore only contexts where the run kept a self-edit: the only ones "
                                 "that inform kept - discarded (half the inner loops if half the contexts kept one)."}
    )
    seed: int = field(
        default=1, metadata={"help": "Seed of the fresh inner seeds, derive_seed(seed, 'rescore', round, index, j): "
                             "never one the run used (it derived its own from (its seed, 'inner', round, index))."}
    )
    round_policies: bool = field(
        default=True, metadata={"help": "Adapt each round's policy, as the run did (round 1: --model; round r: the "
                                "run's checkpoint that ends round r-1). False: adapt --model for every round."}
    )
    model: str | None = field(default=None, metadata={"help": "The policy the run started from; default: the run's."})
    grader: str = field(default="contained", metadata={"help": "Default: the run's.", "choices": list(GRADERS)})
    reward_score: str = field(
        default="accuracy", metadata={"help": "accuracy, loglik or specific_loglik; default: the run's."}
    )
    reward_baseline: str = field(default="base", metadata={"help": "base, passage or none; default: the run's."})
    reward_num_scorings: int = field(
        default=1, metadata={"help": "Inner loops behind one reward (one fresh scoring); default: the run's."}
    )
    question_with_title: bool = field(default=True, metadata={"help": "Default: the run's."})
    self_edit_layout: str = field(
        default="lines",
        metadata={"help": "lines, whole or appended; default: the run's.", "choices": list(DOCUMENT_LAYOUTS)},
    )
    answer_max_new_tokens: int = field(default=64, metadata={"help": "Default: the run's."})
    bootstrap_draws: int = field(default=2000, metadata={"help": "Bootstrap resamples of contexts for the CIs."})
    output_dir: str | None = field(default=None, metadata={"help": "Output folder; default <run_dir>/rescored."})


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written (its example commands), and each field's default."""


class RunDefaultsParser(TrlParser):
    """A `TrlParser` whose defaults are the settings of the run in `--run_dir` (a YAML config and flags override)."""

    def parse_args_and_config(self, args=None, **kwargs):
        args = list(sys.argv[1:] if args is None else args)
        first = super().parse_args_and_config(list(args), **kwargs)
        if first[0].run_dir:
            self.set_defaults(**run_settings(first[0].run_dir))
            return super().parse_args_and_config(list(args), **kwargs)
        return first


def make_parser(prog: str | None = None) -> TrlParser:
    return RunDefaultsParser((RescoreArguments, InnerArguments), prog=prog, description=__doc__,
                             formatter_class=_HelpFormatter)


def run_settings(run_dir: str) -> dict:
    """The run's reward, inner-loop, model and passage settings as field values of this script: from the ledger's
    fingerprint (written by every run), the passages from knowledge_args.json (runs since 2026-12-02) or else
    results.json (a run that evaluated held-out passages)."""
    values = {}
    for name in (ARGS_FILE, "results.json"):
        passages = _read_json(os.path.join(run_dir, name)).get("script_args", {}).get("passages")
        if passages:
            values["passages"] = passages
            break
    ledger = _read_json(os.path.join(run_dir, LEDGER_FOLDER, "config.json"))
    reward = ledger.get("reward") or {}
    names = {"score_kind": "reward_score", "baseline_kind": "reward_baseline", "num_scorings": "reward_num_scorings",
             "question_with_title": "question_with_title", "max_new_tokens": "answer_max_new_tokens",
             "document_layout": "self_edit_layout"}
    values.update({ours: reward[theirs] for theirs, ours in names.items() if theirs in reward})
    graders = {f"{f.__module__}.{f.__qualname__}": name for name, f in GRADERS.items()}
    if reward.get("grader") in graders:
        values["grader"] = graders[reward["grader"]]
    inner_fields = {f.name for f in fields(InnerArguments)}
    for name, value in (ledger.get("inner_adapter") or {}).items():
        if INNER_PREFIX + name in inner_fields:
            values[INNER_PREFIX + name] = value
    if ledger.get("model"):
        values["model"] = ledger["model"]
    return values


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(args: RescoreArguments, inner_args: InnerArguments | None = None) -> int:
    from trl_seal.inner.lora import LoRAInnerAdapter
    from trl_seal.knowledge.data import load_passages

    rows, rows_file = load_run(args)
    wanted = chosen_rounds(args.rounds, rows)
    positions = rescoring.select_rows(rows, wanted, args.max_contexts, kept_contexts_only=args.kept_contexts_only)
    passages = rescoring.match_passages(rows, load_passages(args.passages), rows_file,
                                        args.passages or "the embedded passages", positions)
    reward = knowledge_reward(KnowledgeArguments(**{f.name: getattr(args, f.name) for f in fields(KnowledgeArguments)
                                                    if hasattr(args, f.name)}))
    reward.show_progress = False  # one bar over every inner loop instead of one per context
    adapter = LoRAInnerAdapter((inner_args or InnerArguments()).to_config())
    run_seed = _read_json(os.path.join(args.run_dir, "seal_config.json")).get("seed")
    output_dir = args.output_dir or os.path.join(args.run_dir, "rescored")
    records_path = os.path.join(output_dir, "rescored.jsonl")
    open_output(output_dir, {**asdict(args), "inner_config": asdict(adapter.config), "run_seed": run_seed,
                             "seeds": "derive_seed(seed, 'rescore', round, index in round, scoring)"})
    score_missing(args, rows, positions, passages, reward, adapter, run_seed, records_path)
    indices = rescoring.round_positions(rows)
    selected = {_key(rows[p], indices[p]) for p in positions}
    records = [r for r in _records(records_path) if (r["round"], r["index"], r["sha256"]) in selected]
    skipped: dict[int, int] = {}
    for position in rescoring.select_rows(rows, wanted, args.max_contexts, valid=False,
                                          kept_contexts_only=args.kept_contexts_only):
        skipped[rows[position]["round"]] = skipped.get(rows[position]["round"], 0) + 1
    report(output_dir, records, skipped, args)
    return 0


def score_missing(args, rows, positions, passages, reward, adapter, run_seed, records_path: str) -> None:
    """Rescore the selected self-edits that `records_path` does not hold yet, round by round on its policy."""
    from tqdm.auto import tqdm

    done = {(r["round"], r["index"], r["sha256"]) for r in _records(records_path)}
    indices = rescoring.round_positions(rows)
    todo = [p for p in positions if _key(rows[p], indices[p]) not in done]
    bar = tqdm(total=len(todo) * args.num_scorings * reward.num_scorings, desc="inner loops", unit="adapter")
    for round_index in sorted({rows[p]["round"] for p in todo}):
        model, tokenizer = round_policy(args, round_index)
        adapter.sync(model, tokenizer, version=round_index)  # a new version: the reward's baselines are rescored
        del model
        rescoring.rescore(rows, passages, [p for p in todo if rows[p]["round"] == round_index], reward, adapter,
                          args.num_scorings, args.seed, run_seed, on_record=lambda r: append_jsonl(records_path, [r]),
                          on_inner_loops=bar.update)
    bar.close()


def _key(row: dict, index: int) -> tuple:
    return (row["round"], index, rescoring.self_edit_sha256(row))


def load_run(args: RescoreArguments) -> tuple[list[dict], str]:
    if not args.run_dir:
        raise ValueError("run_dir is not set: pass --run_dir <output_dir of a `trl-seal knowledge` run>.")
    rows_file = os.path.join(args.run_dir, "self_edits.jsonl")
    rows = read_self_edit_rows(args.run_dir)
    if not rows:
        raise ValueError(f"{rows_file} is missing or empty: --run_dir must be the output_dir of a `trl-seal "
                         "knowledge` run that finished at least one round.")
    if args.num_scorings < 1:
        raise ValueError(f"num_scorings={args.num_scorings}: use a positive number of fresh scorings per self-edit.")
    return rows, rows_file


def chosen_rounds(text: str | None, rows: list[dict]) -> list[int] | None:
    """`--rounds` (numbered from 1, as the run prints them) as the file's 0-based round numbers; None: all."""
    if text is None:
        return None
    present = sorted({row["round"] + 1 for row in rows})
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        wanted = []
    if not wanted or set(wanted) - set(present):
        raise ValueError(f"rounds={text!r}: use a comma list of the run's rounds, numbered from 1: {present}.")
    return [number - 1 for number in wanted]


def open_output(output_dir: str, config: dict) -> None:
    """Create the folder and its config.json; refuse one holding records made under other settings."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "config.json")
    config = json.loads(json.dumps(config, default=str))
    saved = _read_json(path)
    differs = sorted(k for k in set(saved) | set(config)
                     if k not in SELECTION_FIELDS and saved.get(k) != config.get(k))
    if saved and differs:
        raise ValueError(f"{output_dir} holds self-edits rescored under other settings ({', '.join(differs)}): use "
                         "another --output_dir, or the same settings to resume.")
    write_json_atomically(path, config)


def round_policy(args: RescoreArguments, round_index: int):
    """(policy, tokenizer) that scored round `round_index` (0-based) of the run, as `round_policies` says."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_seal.models import DEFAULT_MODEL, resolve_model

    base = resolve_model(args.model or DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    path = base if round_index == 0 or not args.round_policies else checkpoint_of_round(args.run_dir, round_index)
    if path is None:
        raise ValueError(f"Round {round_index + 1}'s self-edits were scored by the policy after round {round_index}, "
                         f"but {args.run_dir} holds no checkpoint of that round (save_strategy 'steps' with save_steps"
                         " 0 keeps one per round). Pass --round_policies false to adapt --model instead.")
    if os.path.exists(os.path.join(path, "adapter_config.json")):  # a PEFT run: its adapter on the base model
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="auto"), path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    import torch

    return (model.to("cuda") if torch.cuda.is_available() else model), tokenizer


def checkpoint_of_round(run_dir: str, round_index: int) -> str | None:
    """The run's complete checkpoint written when `round_index` rounds were done (its seal_state.json says so)."""
    from trl_seal.resume import SEAL_STATE

    for name in sorted(os.listdir(run_dir)):
        state = _read_json(os.path.join(run_dir, name, SEAL_STATE)) if name.startswith("checkpoint-") else {}
        if state.get("round") == round_index:
            return os.path.join(run_dir, name)
    return None


def report(output_dir: str, records: list[dict], skipped: dict[int, int], args: RescoreArguments) -> None:
    stats = rescoring.round_statistics(records, skipped, args.bootstrap_draws, args.seed)
    loglik = args.reward_score != "accuracy"  # both log-likelihood scores read in nats per token
    table = rescoring.markdown_table(stats, loglik)
    sentences = "\n".join(rescoring.describe_round(s, loglik) for s in stats)
    text = (f"Self-edits of {args.run_dir} rescored {args.num_scorings} times each on fresh inner seeds (rewards in "
            f"{rescoring.reward_unit(loglik)}; differences within context, 95 % bootstrap CI over contexts)\n\n"
            f"{table}\n\n{sentences}\n")
    print(f"\n{text}", flush=True)
    with open(os.path.join(output_dir, "rescored.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(output_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"rounds": stats}, f, indent=1)


def _records(path: str) -> list[dict]:
    return read_complete_lines(path) if os.path.exists(path) else []


if __name__ == "__main__":
    sys.exit(main(*make_parser().parse_args_and_config()))
