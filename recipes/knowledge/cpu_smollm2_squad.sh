#!/usr/bin/env bash
# SEAL that learns, on a 2-core CPU (see cpu_smollm2_squad.yaml): draw the passages, train two ReST-EM rounds, then
# evaluate base, passage only and three writers of self-edits (untrained, round 1, round 2) on 100 held-out passages.
# Safe to re-run after a kill: the draw is deterministic, training resumes from its last round checkpoint and reuses
# the ledger's scored self-edits, and the evaluation resumes from the chunks of scores it saved (a finished one is
# kept). It ends with the table regraded from the evaluation's kept answers ($OUT/eval/regraded.md).
#   SQUAD=<squad passages json> OUT=<folder> bash recipes/knowledge/cpu_smollm2_squad.sh
# RECIPE names the pair of yamls it runs: cpu_smollm2_squad (the paper's layout and reward, the default),
# cpu_smollm2_squad_appended (self-edits appended to the passage, reward = accuracy gain over the passage alone) or
# cpu_smollm2_squad_loglik (the same, reward = gold-answer log-likelihood gain over the passage alone) or
# cpu_smollm2_squad_specific (the same, reward = question-specific log-likelihood gain, docs/results.md 0h); each
# <RECIPE>.yaml has its <RECIPE>_eval.yaml, and OUT defaults to outputs/seal_squad[_appended|_loglik|_specific].
# TRAIN_ARGS / EVAL_ARGS / SPLIT_ARGS add flags to the three commands (a quick check of the whole path:
#   SPLIT_ARGS="--num_train 2 --num_eval 2" TRAIN_ARGS="--num_train_passages 2 --contexts_per_round 2
#   --inner_num_epochs 1 --max_completion_length 32 --gradient_accumulation_steps 5" EVAL_ARGS="--inner_num_epochs 1"
#   OUT=/tmp/squad_check bash ...: 4 min 33 s on 2 cores; a run of 2 contexts has 20 micro-steps, so the 25 of the
#   yaml must change).
set -euo pipefail
SQUAD=${SQUAD:-../shared/data/squad/squad_v1.1_dev_passages.json}
RECIPE=${RECIPE:-cpu_smollm2_squad}
OUT=${OUT:-outputs/${RECIPE/cpu_smollm2_/seal_}}
HERE=$(dirname "$0")

# 40 training passages from indices 0-999; 100 evaluation passages from 1000 on, after the 100 the studies measured
trl-seal split-passages --passages "$SQUAD" --num_train 40 --train_range 0:1000 --num_eval 100 --eval_range 1000: \
    --eval_skip 100 --output_dir "$OUT/split" ${SPLIT_ARGS:-}
trl-seal knowledge --config "$HERE/$RECIPE.yaml" --passages "$OUT/split/train.json" --output_dir "$OUT" \
    ${TRAIN_ARGS:-}

# the round-1 policy is the first round checkpoint; the final policy is saved in $OUT itself
ROUND1=$(ls -d "$OUT"/checkpoint-* | sort -t- -k2 -n | head -n 1)
# CARRY_FROM=<an earlier evaluation's folder, same settings and passages> reuses its scores of the passage alone and
# of the untrained writer's self-edits: only the trained writers' adapters are trained (reuse_self_edits.py says when
# two evaluations measure alike, and refuses otherwise)
if [ -n "${CARRY_FROM:-}" ] && [ ! -f "$OUT/eval/scores.jsonl" ]; then
    python "$HERE/../../benchmarks/reuse_self_edits.py" --from_dir "$CARRY_FROM" \
        --carry_scores "passage,self_edits (model)" -- --config "$HERE/${RECIPE}_eval.yaml" \
        --passages "$OUT/split/eval.json" --self_edit_model "model,$ROUND1,$OUT" --output_dir "$OUT/eval" ${EVAL_ARGS:-}
fi
if [ ! -f "$OUT/eval/results.json" ]; then
    trl-seal eval-knowledge --config "$HERE/${RECIPE}_eval.yaml" --passages "$OUT/split/eval.json" \
        --self_edit_model "model,$ROUND1,$OUT" --output_dir "$OUT/eval" ${EVAL_ARGS:-}
fi
cat "$OUT/eval/results.md"
# the table regraded from the answers the evaluation kept: F1, exact, recital, the passage's other questions and the
# gold answers' log-likelihood (the loglik recipe's own score; docs/results.md 0f says why `contained` is not enough)
# and, where the evaluation kept it, the question-specific one (the specific recipe's score, 0h)
python "$HERE/../../benchmarks/regrade_answers.py" --eval_dir "$OUT/eval" --data "$OUT/split/eval.json" \
    > "$OUT/eval/regraded.md"
cat "$OUT/eval/regraded.md"
