"""Build tiny Hugging Face style model directories locally: nothing is downloaded.

Used by the demo (examples/demo.sh), the tests and the benchmarks. A model is a small
``LlamaForCausalLM`` built from a config and saved with ``save_pretrained``, with a
byte-level BPE tokenizer trained on a few lines of text by the ``tokenizers`` library.

    python examples/tiny_models.py base  OUT_DIR [--seed N] [--shard-size 200KB]
    python examples/tiny_models.py tweak SRC_DIR OUT_DIR [--fraction 0.1] [--seed N]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

CORPUS = [
    "mvc stores every tensor once and diffs models tensor by tensor.",
    "A commit is an immutable snapshot of a model directory.",
    "Branches, tags and pins name commits; refs move by compare and swap.",
    "Fine-tunes change a few tensors; the rest are shared with the base.",
    "The quick brown fox jumps over the lazy dog.",
]


def build_tokenizer(vocab_size: int = 256):
    """A byte-level BPE tokenizer trained on ``CORPUS`` and wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_base(out: Path | str, *, seed: int = 0, hidden: int = 64, layers: int = 2, vocab_size: int = 256,
               shard_size: str | None = None, dtype: str = "float32") -> Path:
    """Save a tiny randomly initialised Llama model and its tokenizer into ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(out, **kwargs)
    tokenizer.save_pretrained(out)
    return out


def tweak(src: Path | str, out: Path | str, *, fraction: float = 0.1, seed: int = 1, scale: float = 0.01) -> list[str]:
    """Copy the model at ``src`` to ``out`` with ``fraction`` of its weight tensors nudged, like a
    light fine-tune; return the names of the tensors that changed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, out = Path(src), Path(out)
    model = AutoModelForCausalLM.from_pretrained(src)
    names = [n for n, _ in model.named_parameters()]
    gen = torch.Generator().manual_seed(seed)
    k = max(1, round(len(names) * fraction))
    picked = sorted(names[i] for i in torch.randperm(len(names), generator=gen)[:k].tolist())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in picked:
            p = params[n]
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * scale)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("base", help="build a tiny base model")
    b.add_argument("out")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--shard-size", default=None)
    t = sub.add_parser("tweak", help="copy a model with some tensors changed")
    t.add_argument("src")
    t.add_argument("out")
    t.add_argument("--fraction", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.cmd == "base":
        build_base(args.out, seed=args.seed, shard_size=args.shard_size)
        print(f"wrote {args.out}")
    else:
        changed = tweak(args.src, args.out, fraction=args.fraction, seed=args.seed)
        print(f"wrote {args.out}; changed {len(changed)} tensor(s): {', '.join(changed)}")


if __name__ == "__main__":
    main()
