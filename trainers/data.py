"""Training data: reading files, recognising their format, and turning them into datasets.

Files: ``.txt`` (one example per non-empty line), ``.jsonl`` (one JSON object per line) and
``.json`` (a list of objects). Formats, recognised from the first row's keys:

- text: ``{"text": ...}`` (or the configured text field; every line of a .txt file)
- prompt_completion: ``{"prompt": ..., "completion": ...}``
- messages: ``{"messages": [{"role": ..., "content": ...}, ...]}``
- preference: ``{"prompt"?: ..., "chosen": ..., "rejected": ...}``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mvc.errors import InvalidArgument, InvalidSpec

ACCEPTS = {
    "pretrain": ("text", "prompt_completion"),
    "continue": ("text", "prompt_completion"),
    "distill": ("text", "prompt_completion"),
    "sft": ("text", "prompt_completion", "messages"),
    "lora": ("text", "prompt_completion", "messages"),
    "qlora": ("text", "prompt_completion", "messages"),
    "dpo": ("preference",),
    "reward": ("preference",),
}


def read_rows(path: Path | str, *, text_field: str = "text") -> list[dict[str, Any]]:
    """The rows of a data file; a malformed line is an error naming file and line."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidArgument(f"cannot read data file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise InvalidArgument(f"data file {path} is not UTF-8 text") from None
    suffix = path.suffix.lower()
    rows: list[dict[str, Any]] = []
    if suffix == ".jsonl":
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise InvalidArgument(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InvalidArgument(f"{path}:{i}: each line must be a JSON object")
            rows.append(row)
    elif suffix == ".json":
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise InvalidArgument(f"{path}: not valid JSON ({e.msg})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InvalidArgument(f"{path}: a .json data file must hold a list of objects")
        rows = data
    else:
        rows = [{text_field: line} for line in raw.splitlines() if line.strip()]
    if not rows:
        raise InvalidArgument(f"data file {path} holds no examples")
    return rows


def detect_format(row: dict[str, Any], text_field: str = "text") -> str:
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "messages" in row:
        return "messages"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if text_field in row:
        return "text"
    raise InvalidArgument(
        f"cannot tell the data format from the keys {sorted(row)}",
        hint=f"rows need {text_field!r}, prompt/completion, messages, or chosen/rejected keys (or set data.format)",
    )


def check_rows(rows: list[dict[str, Any]], fmt: str, where: str, text_field: str = "text") -> None:
    """Every row has what its format needs."""
    need = {"text": (text_field,), "prompt_completion": ("prompt", "completion"), "messages": ("messages",), "preference": ("chosen", "rejected")}[fmt]
    for i, row in enumerate(rows, 1):
        missing = [k for k in need if k not in row]
        if missing:
            raise InvalidArgument(f"{where}: example {i} lacks {', '.join(missing)} (format {fmt})")
        if fmt == "messages":
            msgs = row["messages"]
            if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
                raise InvalidArgument(f"{where}: example {i}: messages must be a list of {{role, content}} objects")


def load(path: Path | str, method: str, *, fmt: str = "auto", text_field: str = "text") -> tuple[list[dict[str, Any]], str]:
    """Rows of ``path`` and their format, checked against what ``method`` accepts."""
    rows = read_rows(path, text_field=text_field)
    found = detect_format(rows[0], text_field) if fmt == "auto" else fmt
    if found not in ACCEPTS[method]:
        raise InvalidSpec(
            f"method {method} needs {' or '.join(ACCEPTS[method])} data, but {Path(path).name} holds {found} rows",
            hint="see docs/train.md, 'Data formats'",
        )
    check_rows(rows, found, str(path), text_field)
    return rows, found


def to_text(row: dict[str, Any], fmt: str, text_field: str) -> str:
    """The plain text a language-modelling method trains on."""
    if fmt == "prompt_completion":
        return f"{row['prompt']}{row['completion']}"
    return str(row[text_field])


def split(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out ``fraction`` of ``rows`` (at least one) for evaluation, deterministically."""
    import random

    if fraction <= 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(rows) * fraction))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def lm_blocks(texts: list[str], tokenizer, block_size: int):
    """Tokenise ``texts``, join them with EOS and cut the stream into blocks of ``block_size`` (a datasets.Dataset)."""
    from datasets import Dataset

    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    if len(stream) <= block_size:
        blocks = [stream]
    else:
        n = len(stream) // block_size
        blocks = [stream[i * block_size : (i + 1) * block_size] for i in range(n)]
    return Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]})


def dataset(rows: list[dict[str, Any]], fmt: str, text_field: str = "text"):
    """Rows as a datasets.Dataset in the columns trl expects."""
    from datasets import Dataset

    if fmt == "text":
        return Dataset.from_list([{"text": str(r[text_field])} for r in rows])
    if fmt == "prompt_completion":
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    if fmt == "messages":
        return Dataset.from_list([{"messages": [{"role": m["role"], "content": m["content"]} for m in r["messages"]]} for r in rows])
    keys = ("prompt", "chosen", "rejected") if "prompt" in rows[0] else ("chosen", "rejected")
    return Dataset.from_list([{k: r[k] for k in keys} for r in rows])
