#!/usr/bin/env bash
# Runs ON the GPU machine (the call that carries the last part): install vLLM, then the real-engine tests.
set -uo pipefail
[ -d /tmp/site/vllm ] || bash .gpuw/device-install.sh .gpuw 6 || exit 1
[ -d /tmp/site/vllm ] || { echo "vLLM not installed (parts missing?)"; exit 1; }
[ -d /tmp/site3/pytest ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site3 .gpuw/wt/*.whl .gpuw/w1/nats_py-*.whl || exit 1
export PYTHONPATH=/tmp/site3:/tmp/site:.:proto VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
[ -f /tmp/model-shape/model.safetensors ] || python3 .gpuw/random-weights.py || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
export CONCLAVE_TEST_VLLM_MODEL=/tmp/model-shape
python3 -m pytest -p no:cacheprovider -s -rs -v tests/test_inference_vllm_gpu.py tests/test_inference_units.py -k vllm 2>&1 | tee "$OUT/pytest.txt"
