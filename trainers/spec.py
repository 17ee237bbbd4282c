"""The run spec: one pydantic schema shared by YAML files, command-line flags and the Python API.

Every section forbids unknown keys, so a typo is an error that names the key (with the
closest valid one), never a silently ignored setting. ``load_spec`` merges, lowest first: a
YAML file, flag values, then ``--set a.b=value`` overrides; ``resolve`` fills what depends on
the method (learning rate, which sections apply) and ``RunSpec.resolved_dict`` is what is
stored on every commit of the run (``lineage.spec``).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mvc.errors import InvalidSpec

METHODS = ("pretrain", "continue", "sft", "dpo", "lora", "qlora", "distill", "reward")
Method = Literal["pretrain", "continue", "sft", "dpo", "lora", "qlora", "distill", "reward"]
DataFormat = Literal["auto", "text", "prompt_completion", "messages", "preference"]

# Learning rates that make the tiny models of the examples learn visibly in a few dozen steps;
# recorded in the resolved spec, so a run always says what it used.
DEFAULT_LR = {
    "pretrain": 3e-3, "continue": 1e-3, "sft": 5e-4, "lora": 3e-3, "qlora": 2e-4,
    "dpo": 5e-5, "distill": 2e-3, "reward": 2e-4,
}
NEEDS_BASE = ("continue", "sft", "dpo", "lora", "qlora", "reward")
PEFT_METHODS = ("lora", "qlora")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class DataSpec(_Section):
    """Training data: files are stored in the repository and named by id in the lineage."""

    train: str | None = Field(None, description="Training data: .txt (one example per line), .jsonl or .json.")
    eval: str | None = Field(None, description="Evaluation data file (same format as train).")
    eval_split: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of train held out for evaluation when no eval file is given.")
    format: DataFormat = Field("auto", description="Row format; auto detects text, prompt/completion, messages or chosen/rejected.")
    text_field: str = Field("text", min_length=1, description="Column holding the text of language-modelling rows.")
    max_length: int = Field(128, gt=0, le=1_048_576, description="Sequence length (block size for pretraining).")
    packing: bool = Field(False, description="SFT: pack several examples into each sequence.")
    completion_only: bool | None = Field(
        None, description="SFT: loss on the completion / assistant turns only (default: yes for prompt/completion and messages data)."
    )


class TokenizerSpec(_Section):
    """The BPE tokenizer that pretraining trains on the corpus (tokenizers library)."""

    vocab_size: int = Field(512, ge=300, le=1_000_000, description="Vocabulary size, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="Merges need at least this many occurrences.")


class TrainSpec(_Section):
    """Optimisation and runtime options."""

    max_steps: int = Field(-1, ge=-1, description="Optimizer steps; -1 trains for `epochs`.")
    epochs: float = Field(1.0, gt=0, description="Epochs when max_steps is -1.")
    batch_size: int | Literal["auto"] = Field(8, description="Per-device batch size, or auto (start at 64, halve on out-of-memory).")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float | None = Field(None, gt=0, description="Peak learning rate (default depends on the method).")
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop", "adamw_8bit", "paged_adamw_8bit"] = "adamw_torch_fused"
    scheduler: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau"] = "cosine"
    warmup_steps: float = Field(0, ge=0, description="Warmup steps (a value below 1 is a fraction of the run).")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = Field(0, ge=0)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description="auto: bf16 or fp16 on a GPU that has it, fp32 on CPU.")
    gradient_checkpointing: bool = False
    eval_steps: int | None = Field(None, gt=0, description="Evaluate every N steps (needs eval data); default: at the end only.")
    logging_steps: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _auto_batch(self) -> TrainSpec:
        if isinstance(self.batch_size, int) and self.batch_size < 1:
            raise ValueError("batch_size must be a positive integer or 'auto'")
        return self


class CheckpointSpec(_Section):
    """Checkpoints: each one becomes a commit on the run branch as it is saved."""

    save_steps: int | None = Field(None, gt=0, description="Save (and commit) a checkpoint every N steps; default: only the final model.")
    keep_optimizer: int = Field(1, ge=0, description="Keep optimizer/scheduler/RNG state for resuming only for the newest K checkpoints.")


class LoraSpec(_Section):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    merge: bool = Field(False, description="lora: commit the merged full weights as the final model instead of the adapter.")


class DpoSpec(_Section):
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "sppo_hard", "nca_pair"] = "sigmoid"


class DistillSpec(_Section):
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of teacher and student logits.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KL term; (1 - alpha) weighs the hard-label cross-entropy.")


class LaunchSpec(_Section):
    launcher: Literal["none", "accelerate"] = "none"
    num_processes: int = Field(1, ge=1)
    config_file: str | None = Field(None, description="An accelerate config file (DDP, FSDP, DeepSpeed settings).")


class RunSpec(_Section):
    """One training run."""

    method: Method
    name: str | None = Field(None, description="Run name; the run branch is runs/NAME.")
    base: str | None = Field(None, description="Ref of the model to start from.")
    model_config_: str | dict[str, Any] | None = Field(
        None, alias="model_config", description="pretrain/distill student: a preset name, a config.json path, or a config mapping."
    )
    teacher: str | None = Field(None, description="distill: ref of the teacher model.")
    tokenizer: TokenizerSpec | None = None
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    lora: LoraSpec | None = None
    dpo: DpoSpec | None = None
    distill: DistillSpec | None = None
    launch: LaunchSpec = Field(default_factory=LaunchSpec)
    into: str | None = Field(None, description="Also move this branch to the final commit.")
    hooks_file: str | None = Field(None, description="A Python file with callbacks (see docs/train.md).")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), populate_by_name=True)

    @model_validator(mode="after")
    def _method_rules(self) -> RunSpec:
        m = self.method
        if not self.data.train:
            raise ValueError("no training data: set data.train (--data FILE)")
        if m in NEEDS_BASE and not self.base:
            raise ValueError(f"method {m} needs a base model: set base (--base REF)")
        if m == "pretrain" and self.base:
            raise ValueError("pretrain starts from scratch and takes no base; use method continue to keep training a base model")
        if m == "distill":
            if not self.teacher:
                raise ValueError("method distill needs a teacher (--teacher REF)")
            if bool(self.base) == bool(self.model_config_):
                raise ValueError("method distill needs exactly one student: base (a ref) or model_config (a fresh model)")
        elif self.teacher:
            raise ValueError(f"teacher applies to distill only, not {m}")
        if self.model_config_ is not None and m not in ("pretrain", "distill"):
            raise ValueError(f"model_config applies to pretrain and distill only, not {m}")
        if self.tokenizer is not None and m != "pretrain":
            raise ValueError(f"tokenizer applies to pretrain only (other methods use their base model's), not {m}")
        if self.lora is not None and m not in PEFT_METHODS:
            raise ValueError(f"lora settings apply to lora and qlora only, not {m}")
        if self.dpo is not None and m != "dpo":
            raise ValueError(f"dpo settings apply to dpo only, not {m}")
        if self.distill is not None and m != "distill":
            raise ValueError(f"distill settings apply to distill only, not {m}")
        if self.data.packing and m not in ("sft", "lora", "qlora"):
            raise ValueError(f"data.packing applies to sft, lora and qlora only, not {m}")
        if self.launch.launcher == "none" and self.launch.num_processes > 1:
            raise ValueError("num_processes > 1 needs launcher accelerate (--launcher accelerate)")
        return self

    def resolved(self) -> RunSpec:
        """A copy with every method-dependent default filled in."""
        spec = self.model_copy(deep=True)
        if spec.train.learning_rate is None:
            spec.train.learning_rate = DEFAULT_LR[spec.method]
        if spec.method == "pretrain":
            if spec.tokenizer is None:
                spec.tokenizer = TokenizerSpec()
            if spec.model_config_ is None:
                spec.model_config_ = "tiny"
        if spec.method in PEFT_METHODS and spec.lora is None:
            spec.lora = LoraSpec()
        if spec.method == "dpo" and spec.dpo is None:
            spec.dpo = DpoSpec()
        if spec.method == "distill" and spec.distill is None:
            spec.distill = DistillSpec()
        return spec

    def resolved_dict(self) -> dict[str, Any]:
        """The JSON form stored in lineage.spec (keys as written in YAML)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=False)


# -- building a spec from YAML, flags and --set ----------------------------------------------
def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (numbers, true/false/null, lists, objects), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        low = text.strip().lower()
        if low in ("yes", "on"):
            return True
        if low in ("no", "off"):
            return False
        if low in ("none", "~"):
            return None
        return text


def apply_set(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b=value`` to the nested mapping ``data``."""
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise InvalidSpec(f"--set {assignment!r} is not KEY=VALUE", hint="for example --set train.learning_rate=1e-4")
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise InvalidSpec(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = parse_value(value)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` onto ``base`` (values of ``over`` win; None in ``over`` is skipped)."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: Path | str) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidSpec(f"cannot read the run spec {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidSpec(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidSpec(f"{path} must hold a mapping of spec keys (method, base, data, train, ...)")
    return data


def validate(data: dict[str, Any], *, source: str = "run spec") -> RunSpec:
    """``data`` as a RunSpec; a ValidationError becomes InvalidSpec naming the key."""
    try:
        return RunSpec.model_validate(data)
    except ValidationError as e:
        raise invalid_spec(e, source) from None


def load_spec(yaml_path: Path | str | None = None, flags: dict[str, Any] | None = None, sets: list[str] | None = None,
              base_data: dict[str, Any] | None = None) -> RunSpec:
    """Merge ``base_data`` (a recorded spec), a YAML file, flag values and ``--set`` assignments; validate."""
    data: dict[str, Any] = dict(base_data or {})
    if yaml_path is not None:
        data = merge(data, read_yaml(yaml_path))
    data = merge(data, flags or {})
    for s in sets or []:
        apply_set(data, s)
    if "method" not in data:
        raise InvalidSpec("the run spec names no method", hint=f"set method to one of {', '.join(METHODS)} (--method)")
    return validate(data, source=str(yaml_path) if yaml_path else "run spec")


# -- error messages --------------------------------------------------------------------------
def _fields_at(loc: tuple) -> list[str]:
    """The valid keys of the section that ``loc`` (a key path) points into."""
    model: type[BaseModel] | None = RunSpec
    for part in loc[:-1]:
        if model is None or not isinstance(part, str):
            return []
        f = _field_by_key(model, part)
        if f is None:
            return []
        model = _section_type(f.annotation)
    if model is None:
        return []
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _field_by_key(model: type[BaseModel], key: str):
    for n, f in model.model_fields.items():
        if key in (n, f.alias):
            return f
    return None


def _section_type(annotation: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _key(loc: tuple) -> str:
    # pydantic adds union member names (e.g. "int", "literal['auto']") to the location: drop them
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in ("int", "str", "float", "bool", "dict[str,any]", "list[str]")))]
    return ".".join(parts) or "(top level)"


def invalid_spec(err: ValidationError, source: str = "run spec") -> InvalidSpec:
    """One InvalidSpec for a pydantic error: the key path, what is wrong, and the closest valid key."""
    problems: dict[str, list[str]] = {}  # key -> what is wrong (a union reports once per member)
    got: dict[str, str] = {}
    first_hint = None
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        key = _key(loc)
        if e["type"] == "extra_forbidden":
            valid = _fields_at(loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            msg = f"unknown key {key!r}" + (f" (did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?)" if close else "")
            if first_hint is None and valid:
                first_hint = f"valid keys here: {', '.join(valid)}"
            problems.setdefault(msg, [])
            continue
        if e["type"] == "value_error":
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            problems.setdefault(f"{key}: {msg}" if key != "(top level)" else msg, [])
            continue
        value = e.get("input")
        if not isinstance(value, dict):
            got[key] = f" (got {value!r})"
        problems.setdefault(f"bad value for {key!r}", []).append(str(e.get("msg", "invalid")))
    lines = [f"{head}: {' or '.join(dict.fromkeys(msgs))}{got.get(_key_of(head), '')}" if msgs else head for head, msgs in problems.items()]
    text = lines[0] if len(lines) == 1 else f"{lines[0]} (and {len(lines) - 1} more: {'; '.join(lines[1:3])})"
    out = InvalidSpec(f"invalid {source}: {text}", hint=first_hint)
    out.problems = lines  # type: ignore[attr-defined]
    return out


def _key_of(head: str) -> str:
    return head.removeprefix("bad value for ").strip("'")


def describe() -> dict[str, Any]:
    """The schema as JSON Schema (``mvc train --schema``)."""
    return RunSpec.model_json_schema(by_alias=True)
