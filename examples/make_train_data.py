"""Generate the small training sets of the examples: nothing is downloaded.

    python examples/make_train_data.py OUT_DIR [--seed N] [--lines N]

writes into OUT_DIR:

- corpus.txt    templated sentences over a small vocabulary (one per line): a tiny model's
                loss falls visibly within a few dozen steps on a CPU
- sft.jsonl     prompt/completion pairs (questions about the same small world)
- chat.jsonl    the same facts as chat "messages"
- prefs.jsonl   preference pairs: prompt, chosen (true fact), rejected (a false one)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow", "hen", "pig"]
COLORS = {"cat": "black", "dog": "brown", "fox": "red", "owl": "grey", "bee": "yellow", "cow": "white", "hen": "white", "pig": "pink"}
SOUNDS = {"cat": "meows", "dog": "barks", "fox": "yelps", "owl": "hoots", "bee": "buzzes", "cow": "moos", "hen": "clucks", "pig": "oinks"}
PLACES = ["barn", "field", "forest", "garden", "river", "hill"]
HOMES = {"cat": "barn", "dog": "garden", "fox": "forest", "owl": "forest", "bee": "garden", "cow": "field", "hen": "barn", "pig": "field"}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def corpus_lines(n: int, rng: random.Random) -> list[str]:
    templates = [
        lambda a: f"the {a} is {COLORS[a]} .",
        lambda a: f"the {a} {SOUNDS[a]} in the {HOMES[a]} .",
        lambda a: f"a {COLORS[a]} {a} lives in the {HOMES[a]} .",
        lambda a: f"every morning the {a} {SOUNDS[a]} .",
        lambda a: f"the {a} walks to the {rng.choice(PLACES)} and {SOUNDS[a]} .",
    ]
    lines = []
    for _ in range(n):
        if rng.random() < 0.25:
            x, y = rng.randrange(5), rng.randrange(5)
            lines.append(f"{NUMBERS[x]} plus {NUMBERS[y]} is {NUMBERS[x + y]} .")
        else:
            lines.append(rng.choice(templates)(rng.choice(ANIMALS)))
    return lines


def facts() -> list[tuple[str, str, str]]:
    """(question, true answer, false answer)."""
    out = []
    for a in ANIMALS:
        wrong_color = next(c for c in ("green", "blue", "purple") if c != COLORS[a])
        out.append((f"what color is the {a} ?", f"the {a} is {COLORS[a]} .", f"the {a} is {wrong_color} ."))
        wrong_sound = SOUNDS[ANIMALS[(ANIMALS.index(a) + 1) % len(ANIMALS)]]
        out.append((f"what does the {a} do ?", f"the {a} {SOUNDS[a]} .", f"the {a} {wrong_sound} ."))
        wrong_home = next(p for p in PLACES if p != HOMES[a])
        out.append((f"where does the {a} live ?", f"in the {HOMES[a]} .", f"in the {wrong_home} ."))
    for x in range(5):
        for y in range(5):
            out.append((f"what is {NUMBERS[x]} plus {NUMBERS[y]} ?", f"{NUMBERS[x + y]} .", f"{NUMBERS[(x + y + 1) % 10]} ."))
    return out


def write_all(out: Path | str, *, seed: int = 0, lines: int = 2000) -> dict[str, Path]:
    """Write the four files into ``out``; return their paths by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = {name: out / name for name in ("corpus.txt", "sft.jsonl", "chat.jsonl", "prefs.jsonl")}
    paths["corpus.txt"].write_text("\n".join(corpus_lines(lines, rng)) + "\n")
    fs = facts()
    with open(paths["sft.jsonl"], "w") as f:
        for q, good, _bad in fs:
            f.write(json.dumps({"prompt": f"question: {q}\nanswer:", "completion": f" {good}"}) + "\n")
    with open(paths["chat.jsonl"], "w") as f:
        for q, good, _bad in fs:
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": good}]}) + "\n")
    with open(paths["prefs.jsonl"], "w") as f:
        for q, good, bad in fs:
            f.write(json.dumps({"prompt": f"question: {q}\nanswer:", "chosen": f" {good}", "rejected": f" {bad}"}) + "\n")
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lines", type=int, default=2000)
    args = ap.parse_args()
    for name, path in write_all(args.out, seed=args.seed, lines=args.lines).items():
        print(f"wrote {path} ({sum(1 for _ in open(path))} lines)")
        del name


if __name__ == "__main__":
    main()
