#!/usr/bin/env bash
# Runs ON the GPU machine: a random-weight Qwen2.5-0.5B shape (real tokenizer), then trainer.sft on the
# M500 data built from this machine's archive. Usage: bash .gpuw/train/go.sh
set -uo pipefail
[ -d /tmp/pb/pydantic ] || python3 -m pip install -q --no-index --no-deps --target /tmp/pb .gpuw/w1/protobuf-*.whl .gpuw/train/whl/*.whl || exit 1
export PYTHONPATH=/tmp/pb:.:proto PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p /tmp/model-shape && tar -xJf .gpuw/train/qwen2.5-0.5b-shape.tar.xz -C /tmp/model-shape
[ -f /tmp/model-shape/model.safetensors ] || python3 .gpuw/random-weights.py /tmp/model-shape || exit 1
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== full fine-tuning, strict M500 (the paper's recipe but seq 4096)"
python3 -m trainer.sft --data .gpuw/train/m500.jsonl --base-model /tmp/model-shape --output $OUT/full-strict \
  --seq-len 4096 --no-save 2>&1 | tail -n 14
echo "== full fine-tuning, relaxed selection (format, consensus), 2 epochs"
python3 -m trainer.sft --data .gpuw/train/m500-relaxed.jsonl --base-model /tmp/model-shape --output $OUT/full-relaxed \
  --seq-len 4096 --epochs 2 --micro-batch 4 --no-save 2>&1 | tail -n 40
echo "== LoRA r16, relaxed, 2 epochs, lr 1e-4, saved"
python3 -m trainer.sft --data .gpuw/train/m500-relaxed.jsonl --base-model /tmp/model-shape --output $OUT/lora \
  --seq-len 4096 --epochs 2 --micro-batch 4 --lora-rank 16 --lr 1e-4 2>&1 | tail -n 8
ls -la $OUT/lora/final | head
