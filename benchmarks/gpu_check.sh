#!/usr/bin/env bash
# Issue 6's GPU checks as one run on a lent device machine, within its 15-minute budget:
#   here:  bash benchmarks/gpu_wheels.sh
#   there: the device tool's run, carry [".whl"], command: bash benchmarks/gpu_check.sh
# Its python3 holds PyTorch with CUDA; the wheels add pydantic. Every step has its own time
# limit and the script goes on after a failed step (it exits 1 if any failed); the reports
# land in $OUT (returned by the tool) or /tmp/gpu_check. DEVICE=<profile> checks another
# profile, PYTHON another interpreter, WHEELS=none installs nothing: a dry run on a machine
# without a GPU is DEVICE=cpu-1t PYTHON=.venv/bin/python WHEELS=none bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
device=${DEVICE:-cuda-0}
py=${PYTHON:-python3}
wheels=${WHEELS:-.whl}
mkdir -p "$out"
if compgen -G "$wheels/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/hwnas-site "$wheels"/*.whl || exit 1
    export PYTHONPATH=/tmp/hwnas-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

failed=0
step() {  # step NAME SECONDS COMMAND...: output to the console and $out/NAME.txt
    local name=$1 limit=$2 status
    shift 2
    echo "== $name ($(date -u +%T), limit ${limit} s): $*"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    status=${PIPESTATUS[0]}
    echo "== $name: exit $status"
    [ "$status" -eq 0 ] || failed=$((failed + 1))
}

# The limits add up to 540 s, inside the device tool's 600 s a command: the main target
# (predictors) right after the environment, so a slow step later cannot cost it.
step environment 30 "$py" -c "
import platform, torch
from hardware_profiles import get_profile, is_available
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda)
print('devices', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
print('$device available:', is_available(get_profile('$device')))
"
# Predictors (target: >= 95 % within +-10 % and Spearman >= 0.95 after <= 50 measurements).
step predictor 180 "$py" benchmarks/latency_predictor.py --devices "$device" --n 100 --seed 0 \
    --time-cap 0.5 --data "$out/latencies.json"
# Repeatability (target: CV <= 1 % on a GPU) with the profile's runtime, then eager calls for
# the contrast DESIGN.md describes (launch overhead measured instead of the GPU).
step repeatability 150 "$py" benchmarks/latency_repeatability.py --device "$device" --runs 10
step repeatability_eager 60 "$py" benchmarks/latency_repeatability.py --device "$device" \
    --runs 3 --runtime torch_eager
# The runners' own tests (CUDA graph replay computes the model, every runtime on CUDA); the
# conftest files above tests/hardware_profiles need the service's packages, not loaded.
step runner_tests 120 "$py" -m pytest -q -p no:cacheprovider \
    --confcutdir=tests/hardware_profiles tests/hardware_profiles
echo "== $failed step(s) failed"
[ "$failed" -eq 0 ]
