#!/usr/bin/env bash
# The GPU suite on the lent GPU machine, from the repo root, with the wheels of fetch_wheels.sh carried in .whl/:
#   device run, carry [".whl"], command: bash benchmarks/gpu_device/run_suite.sh   (timeout_s 560)
# Installs the carried wheels into /tmp/site (the machine has torch, transformers and accelerate), puts this
# working tree on the path, and writes $OUT/suite/gpu_suite.{json,md} and $OUT/gpu_suite.log.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
out="${OUT:-gpu_suite_out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import diffusers, datasets, galsim, photutils, torch; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
python3 benchmarks/gpu_suite.py --out "$out/suite" --budget-s "${BUDGET_S:-480}" 2>&1 | tee "$out/gpu_suite.log"
