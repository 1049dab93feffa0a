#!/usr/bin/env bash
# The accelerator's share of the tests and of docs/performance.md, on whatever device JAX
# picks (a GPU when jax[cuda] sees one): first the test command (tests/run_accelerator.py:
# the tests whose meaning changes on an accelerator, 5 minutes at most, its summary in
# OUT/tests), then the gradient path's bandwidth, the exact solver at Fashion-MNIST scale
# against LinearSVC on this machine's CPU, the scikit-learn workflow, the C path, training
# and an ImageNet-sized linear probe (1,281,167 x 2048, 1000 classes: iterations x time per
# iteration). Each step has a time limit (the benchmarks' sized for an H200 machine, about
# 10 minutes in all), so one that hangs or fails leaves the others' results; every log and
# result lands in OUT. Exits non-zero when any step failed or ran out of time.
#
#   bash experiments/run_accelerator.sh OUT [FASHION_MNIST_DIR] [PEAK_TB_PER_S]
#
# STEPS names the steps to run (default: all, in the order tests gpu solver solver_alone
# sklearn path train many_classes); where one command may run 10 minutes, run STEPS=tests in
# one, STEPS=many_classes in another and the rest in a third.
# PYTHON names the interpreter (default python3); it needs scikit-learn, and mnist1d for the
# training benchmark (svmjax comes from this checkout unless installed). PEAK_TB_PER_S is the
# card's datasheet memory bandwidth (4.8 for an H200), printed beside the measured copy
# bandwidth.
set -u
out=$(realpath -m "${1:?usage: run_accelerator.sh OUT [FASHION_MNIST_DIR] [PEAK_TB_PER_S]}")
data=$(realpath -m "${2:-/usr/share/datasets/fashion-mnist}")
peak=${3:-}
python=$(command -v "${PYTHON:-python3}") || { echo "no interpreter ${PYTHON:-python3}"; exit 2; }
case $python in /*) ;; *) python=$PWD/$python ;; esac  # a relative path, before the cd
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
: >"$out/steps.txt"
cd "$root/experiments" || exit 2
failed=0

steps=" ${STEPS:-tests gpu solver solver_alone sklearn path train many_classes} "
step() {  # step NAME SECONDS COMMAND...: run with a limit, log, and note the exit status
  local name=$1 limit=$2
  shift 2
  case $steps in *" $name "*) ;; *) return ;; esac
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" >"$out/$name.log" 2>&1
  local status=$?
  [ "$status" -eq 0 ] || failed=1
  echo "$name: exit $status in $((SECONDS - start)) s" | tee -a "$out/steps.txt"
  tail -n 25 "$out/$name.log"
}

step tests 360 "$python" "$root/tests/run_accelerator.py" --out "$out/tests" --deadline 300
step gpu 60 "$python" bench_gpu.py --out "$out/gpu" ${peak:+--peak-tbs "$peak"}
step solver 75 "$python" bench_solver_scale.py --out "$out/solver" --data-dir "$data" \
  --runs 0.01:60000
step solver_alone 45 "$python" bench_solver_scale.py --out "$out/solver_alone" \
  --data-dir "$data" --runs 0.1:60000 1:20000 --no-peer
step sklearn 75 "$python" bench_sklearn.py --out "$out/sklearn" --tasks cv
step path 60 "$python" bench_path.py --out "$out/path" --data-dir "$data"
step train 90 "$python" bench_train.py --out "$out/train" --no-torch
step many_classes 180 "$python" bench_many_classes.py --out "$out/many_classes" --imagenet
cat "$out/steps.txt"
exit "$failed"
