"""Trainer backends: one builder per method over transformers, trl and peft.

Each builder turns a resolved spec, the materialised base/teacher models and the loaded data
into a ready ``Trainer`` plus a function that writes the final model directory. The heavy
libraries are imported here, inside the builders, never at module import.

- pretrain: a fresh model from a preset or config, with a BPE tokenizer trained on the corpus;
  causal LM loss over the corpus cut into blocks (``transformers.Trainer``).
- continue: the same loss, starting from the base model and its tokenizer.
- sft: ``trl.SFTTrainer``: prompt/completion (loss on the completion only), messages (loss on
  assistant turns only) or text, optional packing.
- lora / qlora: sft with a ``peft.LoraConfig`` adapter; qlora loads the base in 4 bits
  (bitsandbytes, CUDA only).
- dpo: ``trl.DPOTrainer`` on chosen/rejected pairs; the reference model is the base commit.
- reward: ``trl.RewardTrainer``: a sequence-classification head scoring chosen over rejected.
- distill: logit distillation: KL between the teacher's and the student's softened
  distributions, scaled by T², blended with the hard-label cross-entropy by ``alpha``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvc.errors import InvalidSpec
from trainers import data as datamod
from trainers import models
from trainers.environment import Runtime
from trainers.spec import RunSpec

LOSS_HOOK_METHODS = ("pretrain", "continue", "sft", "lora", "qlora", "distill")


@dataclass
class BuildContext:
    spec: RunSpec
    runtime: Runtime
    output_dir: Path
    train_rows: list[dict[str, Any]]
    data_format: str
    eval_rows: list[dict[str, Any]]
    base_dir: Path | None = None
    teacher_dir: Path | None = None
    callbacks: list = field(default_factory=list)
    loss_hook: Callable[..., Any] | None = None
    world_size: int = 1
    note: Callable[[str], None] = lambda text: None
    tokenizer_dir: Path | None = None  # resuming pretraining: the tokenizer the run trained


@dataclass
class Built:
    trainer: Any
    tokenizer: Any
    save_final: Callable[[Path], None]
    parameters: int
    trainable: int
    has_eval: bool


def build(ctx: BuildContext) -> Built:
    """The Trainer for ``ctx.spec.method``."""
    method = ctx.spec.method
    if ctx.loss_hook is not None and method not in LOSS_HOOK_METHODS:
        raise InvalidSpec(f"a compute_loss hook applies to {', '.join(LOSS_HOOK_METHODS)}; {method} has its own loss")
    builder = {
        "pretrain": _build_lm, "continue": _build_lm, "sft": _build_sft, "lora": _build_sft, "qlora": _build_sft,
        "dpo": _build_dpo, "reward": _build_reward, "distill": _build_distill,
    }[method]
    return builder(ctx)


# -- shared ------------------------------------------------------------------------------------
PLAIN_TRAINER_METHODS = ("pretrain", "continue", "distill")  # built on transformers.Trainer, not on a trl trainer


def training_kwargs(ctx: BuildContext, *, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments values common to every method."""
    t, c, rt = ctx.spec.train, ctx.spec.checkpoint, ctx.runtime
    auto = t.batch_size == "auto"
    batch = 64 if auto else int(t.batch_size)
    kw: dict[str, Any] = dict(
        output_dir=str(ctx.output_dir),
        max_steps=t.max_steps,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        auto_find_batch_size=auto,
        gradient_accumulation_steps=t.gradient_accumulation,
        learning_rate=t.learning_rate,
        optim=t.optimizer,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=rt.precision == "bf16",
        fp16=rt.precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
        eval_strategy="steps" if has_eval and t.eval_steps else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps" if c.save_steps else "no",
        save_steps=c.save_steps or 500,
        save_total_limit=None,  # mvc keeps every checkpoint as a commit; resume state is pruned by MvcCallback
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        report_to="none",
        disable_tqdm=True,
        use_cpu=rt.device == "cpu",
        # trl's trainers count the tokens they train on themselves (logged as num_tokens, which
        # telemetry reads); transformers' own per-step count costs ~6 % of a small model's step
        include_num_input_tokens_seen="non_padding" if ctx.spec.method in PLAIN_TRAINER_METHODS else "no",
        dataloader_num_workers=0,
        log_level="error",
        log_level_replica="error",
    )
    if ctx.world_size > 1:
        kw["ddp_find_unused_parameters"] = False
        if rt.device == "cpu":
            kw["ddp_backend"] = "gloo"
    return kw


def _trainer_class(cls: type, loss_hook: Callable[..., Any] | None) -> type:
    """``cls``, or a subclass whose loss is the hooks file's ``compute_loss``."""
    if loss_hook is None:
        return cls

    class HookLoss(cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return loss_hook(model=model, inputs=inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch, trainer=self)

    HookLoss.__name__ = HookLoss.__qualname__ = f"HookLoss{cls.__name__}"
    return HookLoss


def _eval_rows(ctx: BuildContext) -> list[dict[str, Any]]:
    return ctx.eval_rows


def _save_with(trainer, tokenizer) -> Callable[[Path], None]:
    def save(out: Path) -> None:
        trainer.save_model(str(out))  # call on every rank; the Trainer writes on the saving rank only
        if trainer.args.should_save:
            tokenizer.save_pretrained(str(out))

    return save


def _counts(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


# -- pretrain / continue -------------------------------------------------------------------------
def _build_lm(ctx: BuildContext) -> Built:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    spec, d = ctx.spec, ctx.spec.data
    texts = [datamod.to_text(r, ctx.data_format, d.text_field) for r in ctx.train_rows]
    if spec.method == "pretrain":
        assert spec.tokenizer is not None and spec.model_config_ is not None
        if ctx.tokenizer_dir is not None:
            tokenizer = models.load_tokenizer(ctx.tokenizer_dir)
        else:
            tokenizer = models.train_tokenizer(texts, vocab_size=spec.tokenizer.vocab_size, min_frequency=spec.tokenizer.min_frequency)
        model = models.new_model(models.model_config(spec.model_config_, tokenizer, max_length=d.max_length), seed=spec.train.seed)
    else:
        tokenizer = models.load_tokenizer(ctx.base_dir)
        model = models.load_causal_lm(ctx.base_dir)
    train_ds = datamod.lm_blocks(texts, tokenizer, d.max_length)
    eval_texts = [datamod.to_text(r, ctx.data_format, d.text_field) for r in _eval_rows(ctx)]
    eval_ds = datamod.lm_blocks(eval_texts, tokenizer, d.max_length) if eval_texts else None
    args = TrainingArguments(**training_kwargs(ctx, has_eval=eval_ds is not None))
    cls = _trainer_class(Trainer, ctx.loss_hook)
    trainer = cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                  data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False), callbacks=list(ctx.callbacks))
    total, trainable = _counts(model)
    return Built(trainer, tokenizer, _save_with(trainer, tokenizer), total, trainable, eval_ds is not None)


# -- sft / lora / qlora ----------------------------------------------------------------------------
def _build_sft(ctx: BuildContext) -> Built:
    from trl import SFTConfig, SFTTrainer

    spec, d = ctx.spec, ctx.spec.data
    tokenizer = models.load_tokenizer(ctx.base_dir)
    models.ensure_chat_template(tokenizer)
    peft_config = None
    quantization = None
    if spec.method in ("lora", "qlora"):
        from peft import LoraConfig

        lo = spec.lora
        assert lo is not None
        peft_config = LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=lo.target_modules, task_type="CAUSAL_LM")
    if spec.method == "qlora":
        import torch
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if ctx.runtime.precision == "bf16" else torch.float16
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    model = models.load_causal_lm(ctx.base_dir, quantization_config=quantization)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.train.gradient_checkpointing)
    completion_only = d.completion_only
    kw = training_kwargs(ctx, has_eval=bool(ctx.eval_rows))
    kw.update(
        max_length=d.max_length,
        packing=d.packing,
        # best-fit packing needs padding-free attention (FlashAttention); elsewhere pack by wrapping
        packing_strategy="bfd" if ctx.runtime.cuda else "wrapped",
        completion_only_loss=None if completion_only is None else (completion_only and ctx.data_format == "prompt_completion"),
        assistant_only_loss=ctx.data_format == "messages" and completion_only is not False,
        dataset_text_field="text",
    )
    args = SFTConfig(**kw)
    train_ds = datamod.dataset(ctx.train_rows, ctx.data_format, d.text_field)
    eval_ds = datamod.dataset(ctx.eval_rows, ctx.data_format, d.text_field) if ctx.eval_rows else None
    cls = _trainer_class(SFTTrainer, ctx.loss_hook)
    trainer = cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                  peft_config=peft_config, callbacks=list(ctx.callbacks))
    total, trainable = _counts(trainer.model)

    def save(out: Path) -> None:
        if spec.method == "lora" and spec.lora is not None and spec.lora.merge:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            if trainer.args.should_save:
                merged.save_pretrained(str(out))
        else:
            trainer.save_model(str(out))
        if trainer.args.should_save:
            tokenizer.save_pretrained(str(out))

    return Built(trainer, tokenizer, save, total, trainable, eval_ds is not None)


# -- dpo -------------------------------------------------------------------------------------------
def _build_dpo(ctx: BuildContext) -> Built:
    from trl import DPOConfig, DPOTrainer

    spec, d = ctx.spec, ctx.spec.data
    assert spec.dpo is not None
    tokenizer = models.load_tokenizer(ctx.base_dir)
    models.ensure_chat_template(tokenizer)
    model = models.load_causal_lm(ctx.base_dir)
    reference = models.load_causal_lm(ctx.base_dir)  # the reference policy is the base commit itself
    kw = training_kwargs(ctx, has_eval=bool(ctx.eval_rows))
    kw.update(beta=spec.dpo.beta, loss_type=[spec.dpo.loss_type], max_length=d.max_length)
    args = DPOConfig(**kw)
    train_ds = datamod.dataset(ctx.train_rows, "preference")
    eval_ds = datamod.dataset(ctx.eval_rows, "preference") if ctx.eval_rows else None
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, callbacks=list(ctx.callbacks))
    total, trainable = _counts(model)
    return Built(trainer, tokenizer, _save_with(trainer, tokenizer), total, trainable, eval_ds is not None)


# -- reward ----------------------------------------------------------------------------------------
def _build_reward(ctx: BuildContext) -> Built:
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    d = ctx.spec.data
    tokenizer = models.load_tokenizer(ctx.base_dir)
    models.ensure_chat_template(tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(str(ctx.base_dir), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    kw = training_kwargs(ctx, has_eval=bool(ctx.eval_rows))
    kw.update(max_length=d.max_length)
    args = RewardConfig(**kw)
    train_ds = datamod.dataset(ctx.train_rows, "preference")
    eval_ds = datamod.dataset(ctx.eval_rows, "preference") if ctx.eval_rows else None
    trainer = RewardTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                            callbacks=list(ctx.callbacks))
    total, trainable = _counts(model)
    return Built(trainer, tokenizer, _save_with(trainer, tokenizer), total, trainable, eval_ds is not None)


# -- distill ---------------------------------------------------------------------------------------
def distillation_loss(student_logits, teacher_logits, labels, *, temperature: float, alpha: float):
    """``alpha`` · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · CE(student, labels), over real tokens.

    Logits are ``[batch, seq, vocab]``; ``labels`` ``[batch, seq]`` with -100 on padding (as the
    causal LM collator makes them). The KL term is averaged over the positions that predict a
    label; multiplying by T² keeps its gradients on the scale of the hard loss (Hinton et al.).
    Returns ``(loss, kl, ce)``.
    """
    import torch.nn.functional as F

    s = student_logits[:, :-1, :].float()
    t = teacher_logits[:, :-1, :].float()
    target = labels[:, 1:]
    mask = target != -100
    n = mask.sum().clamp(min=1)
    s_log = F.log_softmax(s / temperature, dim=-1)
    t_log = F.log_softmax(t / temperature, dim=-1)
    kl_per_token = (t_log.exp() * (t_log - s_log)).sum(-1)
    kl = (kl_per_token * mask).sum() / n * temperature**2
    ce = F.cross_entropy(s.reshape(-1, s.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum") / n
    if alpha >= 1:
        loss = kl
    elif alpha <= 0:
        loss = ce
    else:
        loss = alpha * kl + (1 - alpha) * ce
    return loss, kl.detach(), ce.detach()


def _build_distill(ctx: BuildContext) -> Built:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    spec, d = ctx.spec, ctx.spec.data
    assert spec.distill is not None
    tokenizer = models.load_tokenizer(ctx.teacher_dir)
    teacher = models.load_causal_lm(ctx.teacher_dir)
    if spec.base:
        student = models.load_causal_lm(ctx.base_dir)
    else:
        assert spec.model_config_ is not None
        student = models.new_model(models.model_config(spec.model_config_, tokenizer, max_length=d.max_length), seed=spec.train.seed)
    if student.config.vocab_size != teacher.config.vocab_size:
        raise InvalidSpec(
            f"distill needs teacher and student to share a vocabulary: teacher has {teacher.config.vocab_size} tokens, "
            f"student {student.config.vocab_size}",
            hint="start the student from a model with the teacher's tokenizer, or from a model_config (it takes the teacher's)",
        )
    texts = [datamod.to_text(r, ctx.data_format, d.text_field) for r in ctx.train_rows]
    train_ds = datamod.lm_blocks(texts, tokenizer, d.max_length)
    eval_texts = [datamod.to_text(r, ctx.data_format, d.text_field) for r in ctx.eval_rows]
    eval_ds = datamod.lm_blocks(eval_texts, tokenizer, d.max_length) if eval_texts else None
    temperature, alpha = spec.distill.temperature, spec.distill.alpha
    loss_hook = ctx.loss_hook

    class DistillTrainer(Trainer):
        def __init__(self, *args, teacher_model, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher_model.to(self.args.device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self._parts: dict[str, list[float]] = {"distill_kl": [], "distill_ce": []}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            if loss_hook is not None:
                return loss_hook(model=model, inputs=inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch, trainer=self)
            labels = inputs["labels"]
            feed = {k: v for k, v in inputs.items() if k != "labels"}
            outputs = model(**feed)
            with torch.no_grad():
                teacher_logits = self.teacher(**feed).logits
            loss, kl, ce = distillation_loss(outputs.logits, teacher_logits, labels, temperature=temperature, alpha=alpha)
            if model.training:
                self._parts["distill_kl"].append(float(kl))
                self._parts["distill_ce"].append(float(ce))
            return (loss, outputs) if return_outputs else loss

        def log(self, logs, start_time=None):
            for k, vals in self._parts.items():
                if vals and "loss" in logs:
                    logs[k] = sum(vals) / len(vals)
                    vals.clear()
            super().log(logs, start_time)

    args = TrainingArguments(**training_kwargs(ctx, has_eval=eval_ds is not None))
    trainer = DistillTrainer(model=student, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                             data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False), callbacks=list(ctx.callbacks),
                             teacher_model=teacher)
    total, trainable = _counts(student)
    return Built(trainer, tokenizer, _save_with(trainer, tokenizer), total, trainable, eval_ds is not None)
