#!/usr/bin/env bash
# mvc train, end to end on a laptop CPU (a few minutes): a tiny model pretrained from scratch with
# its own BPE tokenizer, then SFT, DPO and LoRA runs on branches from it. Every checkpoint is a commit.
#
#   bash examples/train_demo.sh [WORK_DIR]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-$(mktemp -d -t mvc-train-demo-XXXXXX)}"
mkdir -p "$WORK" && cd "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "working in $WORK"
python "$HERE/make_train_data.py" data            # templated sentences, Q&A, chat and preference pairs
step mvc init

# 1. pretrain: tiny Llama preset + a BPE tokenizer trained on the corpus; a checkpoint commit every 20 steps
step mvc train --method pretrain --data data/corpus.txt --max-steps 120 --save-steps 40 --name base --into main \
     --set train.batch_size=16 --set data.max_length=64

# 2. three runs from the same base, each on its own branch runs/NAME
step mvc train --method sft  --base main --data data/sft.jsonl   --max-steps 60 --save-steps 30 --name sft
step mvc train --method dpo  --base runs/sft --data data/prefs.jsonl --max-steps 20 --save-steps 10 --name dpo
step mvc train --method lora --base main --data data/chat.jsonl  --max-steps 60 --save-steps 30 --name lora --set lora.merge=true

# 3. history, status and what changed
step mvc runs
step mvc log --oneline runs/dpo
step mvc show runs/sft
step mvc diff main runs/sft
step mvc diff main runs/lora
step mvc query "SELECT message, json_extract(metrics, '$.loss') AS loss, json_extract(metrics, '$.tokens_per_s') AS tok_s FROM commits WHERE kind IN ('checkpoint', 'train') ORDER BY time"

# 4. replay a run from the spec and data recorded on its final commit
step mvc train --from runs/sft --max-steps 10 --name sft-replay
echo
echo "done: $WORK"
