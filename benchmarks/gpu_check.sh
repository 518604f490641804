#!/usr/bin/env bash
# What only a GPU can show, as one device call of under 9 minutes (a lent GPU gets 15 minutes per session, all tries
# together): the CUDA equivalence tests, then the inner loop's arms at the paper's settings on the SmolLM2-135M
# configuration with random weights (the embedded weights are too large to travel), with a profiler summary.
#
# Here, once (needs pip and the embedded model; writes only ignored folders):
#   bash benchmarks/gpu_check.sh prepare
# Then with the device tool (its image has torch, peft, accelerate; the wheels bring transformers, trl, datasets):
#   run(command="bash benchmarks/gpu_check.sh run", carry=[".whl", ".gpu_model"], timeout_s=570)
# Logs come back under $OUT. Each step has its own time limit, so a hung step costs its limit, not the call.
# A CPU dry run of the plumbing (minutes), with a Python that has torch:
#   PYTHON=.venv/bin/python DEVICE=cpu EPOCHS=1 NEW_TOKENS=8 SELF_EDITS=2 KS=2 OUT=/tmp/gc bash benchmarks/gpu_check.sh run
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"

prepare() {
    set -e
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        transformers==5.24.0 trl==1.16.0 datasets==5.2.0 peft==0.21.2 dill==0.4.1 multiprocess==0.70.19
    grep -qx '/.gpu_model/' .gitignore || echo '/.gpu_model/' >> .gitignore
    python - <<'EOF'
from transformers import AutoConfig, AutoTokenizer

from trl_seal.models import resolve_model

path = resolve_model()
AutoConfig.from_pretrained(path).save_pretrained(".gpu_model")
AutoTokenizer.from_pretrained(path).save_pretrained(".gpu_model")
print("config and tokenizer of", path, "in .gpu_model")
EOF
    du -sh .whl .gpu_model
}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, go on whatever happens
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "== $name: exit $? after ${SECONDS}s in all"
    tail -n 25 "$OUT/$name.log"
}

run() {
    local PY=${PYTHON:-python3}  # the device image's python3 holds torch
    if [ -d .whl ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
    fi
    export PYTHONPATH=src:benchmarks:$PYTHONPATH PYTHONUNBUFFERED=1
    local device=${DEVICE:-cuda} epochs=${EPOCHS:-10} tokens=${NEW_TOKENS:-64} edits=${SELF_EDITS:-16} ks=${KS:-16,64}
    (nvidia-smi || true; "$PY" -c "import torch, transformers, peft, trl; print(torch.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda', transformers.__version__, peft.__version__, \
trl.__version__)") > "$OUT/machine.txt" 2>&1
    cat "$OUT/machine.txt"
    step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_inner_kernels.py \
        tests/test_inner_batched.py -k "cuda or equal"
    step inner_loop_135m 240 "$PY" benchmarks/inner_loop.py --model .gpu_model --random_init same \
        --device "$device" --arms B,C,F --ks "$ks" --self_edits "$edits" --reference_self_edits 1 --epochs "$epochs" \
        --max_new_tokens "$tokens" --trials 1 --profile --profile_steps 4
    step inner_loop_1.5b 120 "$PY" benchmarks/inner_loop.py --model .gpu_model --random_init 1.5b \
        --device "$device" --arms C,F --ks 16 --self_edits "$edits" --epochs "$epochs" --max_new_tokens "$tokens" \
        --trials 1
}

case "${1:-run}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash benchmarks/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
