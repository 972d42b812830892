#!/usr/bin/env bash
# What a session that touches kernels or the capture path runs on a GPU machine, logs into OUT:
# the self-tests and the CLI's main jobs on CUDA, then the benchmarks. Usage, from the repo root:
#   benchmarks/gpu_checks.sh OUT [WORKERS]
# WORKERS (default 2) xdist workers run the self-tests; with several GPUs each pins its own.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_checks.sh OUT [WORKERS]}
workers=${2:-2}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
step() { echo "== $1 ($(date +%T))"; }

step "self-tests on $(nvidia-smi -L | wc -l) GPU(s), -n $workers"
# The GPU image has no chromium: the one browser test is CPU CI's.
timeout 300 python3 -m pytest tests -n "$workers" -q -p no:cacheprovider --durations=15 \
    --deselect tests/test_report.py::test_html_report_renders_its_summary_and_images_in_chromium \
    2>&1 | tee "$out/tests.log" | tail -40

step "graph-harness reproduce aiter-2508"
timeout 120 graph-harness reproduce aiter-2508 --json "$out/reproduce.json" 2>&1 | tee "$out/reproduce.log"
echo "exit ${PIPESTATUS[0]}"

step "graph-harness report (DeepSeek-V3 TP8 decode, all policies)"
timeout 180 graph-harness report deepseek-v3-tp8-decode deepseek-v3-tp8-h200 --out "$out/report" 2>&1 | tail -15
echo "exit ${PIPESTATUS[0]}"

step "bench_guards"
for scenario in deepseek-v3-tp8-decode deepseek-v3-ep-decode; do
    timeout 120 python3 benchmarks/bench_guards.py --scenario "$scenario" --json "$out/guards-$scenario.json"
done

step "bench_moe"
timeout 300 python3 benchmarks/bench_moe.py --tokens 1 2 4 8 --kernel-only --floor --json "$out/bench_moe.json"
step done
