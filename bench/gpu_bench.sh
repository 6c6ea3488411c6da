#!/usr/bin/env bash
# bench/diffusers_speed.py on a GPU machine with torch and transformers but no network (the
# device machine). Missing pure-Python packages come from wheels in .whl/, made beforehand on a
# machine with network:  pip download -q --no-deps -d .whl diffusers==0.42.1 ftfy wcwidth
# Arguments go to the benchmark, $SCRIPT (default bench/diffusers_speed.py; also
# bench/gpu_memory_modes.py, bench/cold_start.py); results land in $OUT (default ./bench-out). Reel's
# paths write real H.264 now, so PyAV (av) must be importable too.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/reel-bench-site}
export OUT=${OUT:-$PWD/bench-out}
have() { "$PY" -c "import $1" 2>/dev/null; }
if ! "$PY" -c "import diffusers, sys; sys.exit(diffusers.__version__ != '0.42.1')" 2>/dev/null \
    || ! have ftfy; then
    "$PY" -m pip install -q --no-index --no-deps --upgrade --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
for module in torch transformers diffusers numpy PIL tokenizers safetensors av; do
    have "$module" || { echo "gpu_bench: python module $module is missing" >&2; exit 1; }
done
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
exec "$PY" "${SCRIPT:-bench/diffusers_speed.py}" --device cuda "$@"
