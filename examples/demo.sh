#!/usr/bin/env bash
# mvc in one minute: commit a tiny model, fine-tune it in place, see the per-tensor change,
# commit again, diff, look at history, branch and tag, check a commit out byte-exact, ask the
# index what the two commits share, and verify the store.
#
#   bash examples/demo.sh [SCRATCH_DIR]      (default: a new directory under $TMPDIR or /tmp)
#
# Needs the package installed (`pip install -e '.[dev]'`, see README.md); builds the models
# locally with examples/tiny_models.py, nothing is downloaded. Runs in ~15 s on a laptop CPU.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-$(command -v python || command -v python3)}"
if command -v mvc >/dev/null 2>&1; then MVC=("$(command -v mvc)"); else MVC=("$PY" -m mvc); fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1
export MVC_AUTHOR="${MVC_AUTHOR:-Demo User <demo@example.com>}"

WORK="${1:-$(mktemp -d "${TMPDIR:-/tmp}/mvc-demo.XXXXXX")}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
if [ -e "$WORK/repo" ]; then echo "error: $WORK/repo already exists; give an empty scratch directory" >&2; exit 1; fi
START=$SECONDS

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() {  # print a command line the way it could be typed
  local out="$" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=~+-]+$ ]]; then out+=" $a"
    elif [[ "$a" != *[\"\$\`\\]* ]]; then out+=" \"$a\""
    else out+=" '${a//\'/\'\\\'\'}'"; fi
  done
  printf '%s\n' "$out"
}
run() { show "$@"; "$@"; }
mvc() { show mvc "$@"; "${MVC[@]}" "$@"; }
id_of() { "${MVC[@]}" show "$1" --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }

step "scratch directory: $WORK"
run mkdir -p "$WORK/repo"
cd "$WORK/repo"

step "build a tiny Llama model locally (config, tokenizer, model.safetensors)"
run "$PY" "$HERE/tiny_models.py" base model --seed 0
run ls -l model
cp -r model "$WORK/base-copy"   # kept aside to check the checkout byte for byte

step "create a repository and commit the base model"
mvc init .
mvc commit model -m "base: tiny Llama, random init"
mvc status

step "fine-tune in place: nudge 10% of the tensors of model/ (written INTO the same directory)"
run "$PY" "$HERE/tiny_models.py" tweak model model --fraction 0.1 --seed 1

step "status: which files and which tensors changed"
mvc status

step "commit the fine-tune: only the changed tensors are stored"
mvc commit -m "fine-tune: 10% of tensors nudged" --metrics '{"eval_loss": 2.31}'
mvc status

step "diff the two commits: which tensors changed, and by how much"
mvc diff HEAD~1 HEAD

step "history"
mvc log --graph
mvc show

step "branch and tag"
mvc branch experiment
mvc tag v0-base HEAD~1
mvc tag v1-finetune
mvc branch
mvc tag
mvc log --oneline

step "check out the base model into a new directory, and compare it byte for byte"
mvc checkout v0-base -o "$WORK/base-out"
for f in "$WORK"/base-copy/*; do run cmp "$f" "$WORK/base-out/$(basename "$f")"; done
run diff -r "$WORK/base-copy" "$WORK/base-out"
echo "byte-exact: every file of the checkout matches the original base model"
mvc checkout v1-finetune -o "$WORK/finetune-out"
run diff -r model "$WORK/finetune-out"
echo "byte-exact: the fine-tune checkout matches model/"

step "ask the index: tensors shared by the two commits, and bytes unique to each"
BASE=$(id_of v0-base)
FT=$(id_of v1-finetune)
mvc query "
  SELECT count(*) AS tensors_in_base,
         count(f.tensor_id) AS shared_with_finetune,
         count(*) - count(f.tensor_id) AS changed,
         sum(CASE WHEN f.tensor_id IS NOT NULL THEN b.size ELSE 0 END) AS shared_bytes
  FROM tensors b
  LEFT JOIN tensors f ON f.commit_id = '$FT' AND f.name = b.name AND f.tensor_id = b.tensor_id
  WHERE b.commit_id = '$BASE'"
mvc query "
  SELECT t.name, b.tensor_id[:12] AS in_base, t.tensor_id[:12] AS in_finetune, t.size AS bytes
  FROM tensors t JOIN tensors b ON b.commit_id = '$BASE' AND b.name = t.name
  WHERE t.commit_id = '$FT' AND t.tensor_id <> b.tensor_id ORDER BY t.name"
mvc query "
  SELECT CASE x.commit_id WHEN '$BASE' THEN 'v0-base' ELSE 'v1-finetune' END AS tag,
         count(*) AS objects_only_here, sum(x.size) AS bytes_only_here,
         (SELECT sum(size) FROM blobs WHERE commit_id = x.commit_id) AS bytes_total
  FROM blobs x
  WHERE x.commit_id IN ('$BASE', '$FT')
    AND NOT EXISTS (SELECT 1 FROM blobs y WHERE y.blob_id = x.blob_id AND y.commit_id IN ('$BASE', '$FT')
                    AND y.commit_id <> x.commit_id)
  GROUP BY x.commit_id ORDER BY tag"
echo "bytes stored for both commits: $(du -sb --apparent-size .mvc/objects | cut -f1); one model as plain files: $(du -sb --apparent-size model | cut -f1)"
echo "(at this tiny size manifests, trees and commits weigh more; a 1 GiB model: benchmarks/RESULTS.md)"

step "verify every object and ref"
mvc fsck

step "done in $((SECONDS - START)) s; everything is in $WORK"
