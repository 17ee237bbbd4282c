"""Models and tokenizers for runs: presets for pretraining, BPE tokenizer training, loading bases.

Everything is built locally (nothing is downloaded). The presets are small Llama
configurations; ``tiny`` trains on a laptop CPU in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mvc.errors import InvalidSpec

PRESETS: dict[str, dict[str, Any]] = {
    # name: LlamaConfig arguments (vocab size and special token ids come from the tokenizer)
    "tiny": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
    "small": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4},
    "medium": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8},
}
SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")

# A chat template with generation markers, so SFT can train on assistant turns only.
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "<|assistant|>\n{% generation %}{{ m['content'] }}{{ eos_token }}{% endgeneration %}\n"
    "{%- else -%}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>\n{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 512, min_frequency: int = 2):
    """A byte-level BPE tokenizer trained on ``texts`` with the tokenizers library, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def ensure_chat_template(tokenizer) -> None:
    """Give a tokenizer without a chat template the default one (chat data needs one)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def model_config(source: str | dict[str, Any], tokenizer, *, max_length: int):
    """A transformers config from a preset name, a config.json path or a mapping, sized for ``tokenizer``."""
    from transformers import AutoConfig, LlamaConfig

    if isinstance(source, dict):
        data = dict(source)
    elif source in PRESETS:
        data = {"model_type": "llama", **PRESETS[source]}
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise InvalidSpec(f"model_config {source!r} is neither a preset ({', '.join(PRESETS)}) nor a config.json file")
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise InvalidSpec(f"model_config {path} is not valid JSON: {e}") from None
    model_type = data.pop("model_type", "llama")
    data.setdefault("max_position_embeddings", max(1024, max_length))
    data.setdefault("tie_word_embeddings", False)
    data.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    try:
        return LlamaConfig(**data) if model_type == "llama" else AutoConfig.for_model(model_type, **data)
    except (ValueError, TypeError) as e:
        raise InvalidSpec(f"model_config cannot build a {model_type} model: {e}") from None


def new_model(config, *, seed: int):
    """A randomly initialised causal LM for ``config`` (seeded)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def load_tokenizer(path: Path | str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: Path | str, *, dtype: str | None = None, quantization_config=None):
    """Load the causal LM saved in ``path`` (a commit materialised by the run)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if dtype:
        kwargs["dtype"] = dtype
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
