#!/usr/bin/env bash
# The GPU checks, in one call on a lent device machine (after `bash scripts/device_wheels.sh` here):
#   device run: carry [".device_wheels", ".gl"], timeout_s 600, command "bash scripts/device_check.sh"
# It installs the carried wheels into the machine's python3 (which holds torch), then runs, each step under its
# own time limit and on after a failure: the CUDA tests, the planner benchmark on CUDA (CUDA-graph MPPI / CEM /
# goal-CEM and the tdmpc update, eager and compiled) and a short tdmpc_cpu training run on CUDA with the world
# model's loss compiled. Logs and JSON go to $OUT (what a device run brings back); summary.txt lists each step's
# exit status and seconds. The limits add up to 590 s, inside one 600 s call.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export MUJOCO_GL=egl PYTHONUNBUFFERED=1
for deb in .gl/*.deb; do dpkg -x "$deb" /; done
ldconfig

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a time limit, its output in $OUT/NAME.txt
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local status=$?
  echo "$name: exit $status, $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

step install 90 bash -c "python3 -m pip install -q --no-index --no-deps .device_wheels/*.whl \
  && (python3 -m pip install -q --no-deps --no-build-isolation -e . \
  || python3 -m pip install -q --no-deps --no-build-isolation .)"
step versions 30 bash -c "nvidia-smi -L; python3 -c 'import sys, torch, mujoco; print(sys.version); \
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), mujoco.__version__)'"
step cuda_tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py tests/test_train.py -k "cuda"
step planner_benchmark 210 python3 scripts/benchmark.py planner --device cuda --out "$OUT/planner_cuda.json"
step train_compiled 110 python3 scripts/train.py experiment=tdmpc_cpu device=cuda compile=true steps=6500 \
  prefill=5000 pretrain_updates=0 eval_every=6500 eval_episodes=2 video=false hydra.run.dir=/tmp/device_check_run
cp /tmp/device_check_run/metrics.csv "$OUT/train_compiled_metrics.csv" 2>/dev/null
cat "$OUT/summary.txt"
