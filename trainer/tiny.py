"""A tiny random model, its tokenizer and made-up discussions: for running the training plumbing
(torchrun, FSDP, checkpoints) on a CPU in seconds, with nothing downloaded. Not a model of anything;
the tests (tests/test_trainer_fsdp.py) and the scaling benchmark's --tiny mode use it.

  python -m trainer.tiny /tmp/tiny      # writes /tmp/tiny/model and /tmp/tiny/data.jsonl
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from trainer import dataset
from trainer.samples import Sample

WORDS = [f"w{i}" for i in range(200)]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_model(directory: Path, *, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """A byte-level BPE tokenizer learnt from the made-up words (the Qwen2 tokenizer's kind: transformers
    picks the tokenizer class from the model type) and a randomly initialised Qwen2 model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator([" ".join(WORDS), "system user assistant"], trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(directory)
    loaded = AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(loaded), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False,
                         pad_token_id=loaded.pad_token_id, eos_token_id=loaded.eos_token_id)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return directory


def make_samples(problems: int = 12, seed: int = 0, max_words: int = 60) -> list[Sample]:
    """Problems of 2 to 6 agent calls; each answer repeats a pattern of its prompt, so the loss can fall."""
    rng = random.Random(seed)
    out = []
    for p in range(problems):
        for seq in range(1, rng.randint(2, 6) + 1):
            words = rng.choices(WORDS, k=rng.randint(5, max_words))
            out.append(Sample(problem_id=f"tiny-{p:03d}", seq=seq, role="solver", messages=(
                {"role": "system", "content": "w1 w2 w3"},
                {"role": "user", "content": " ".join(words)},
                {"role": "assistant", "content": " ".join(sorted(words)[: max(1, len(words) // 2)])})))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in {"-h", "--help"}:
        print(__doc__)
        return 2
    root = Path(args[0])
    make_model(root / "model")
    dataset.write(make_samples(), root / "data.jsonl")
    print(f"{root / 'model'} and {root / 'data.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
