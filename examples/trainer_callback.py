"""Your own transformers.Trainer script, with its checkpoints committed to an mvc repository.

The two lines marked "mvc" are all it takes: every checkpoint the Trainer saves becomes a
``checkpoint`` commit on the branch (with step and metrics), and the final model a ``train``
commit. Run it inside a repository (``mvc init``):

    python examples/trainer_callback.py [OUT_DIR]
    mvc log --oneline runs/my-experiment
"""

from __future__ import annotations

import sys
from pathlib import Path

from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402  (a tiny Llama + tokenizer built locally)

from trainers.callback import MvcCallback  # noqa: E402  mvc (1/2)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/my-experiment")
    base = tiny_models.build_base(out.parent / "base")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    texts = tiny_models.CORPUS * 8
    train = [{"input_ids": ids} for ids in tokenizer(texts)["input_ids"]]
    args = TrainingArguments(output_dir=str(out), max_steps=6, save_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
                             report_to="none", use_cpu=True, logging_steps=1)
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                      data_collator=DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False))
    trainer.add_callback(MvcCallback(repo=".", branch="runs/my-experiment", commit_final=True))  # mvc (2/2)
    trainer.train()


if __name__ == "__main__":
    main()
