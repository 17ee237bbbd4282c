"""Layering of the training code, read from the source (like tests/test_source.py for the core).

- ``trainers`` imports the standard library, ``mvc``, ``hooks``, itself, pydantic, yaml and git at
  module level; transformers, trl, peft, datasets, accelerate, tokenizers and torch only inside functions.
- ``mvc/cli`` imports ``trainers`` only inside the ``train`` command function.
- ``mvc --help`` and ``mvc runs`` import none of the heavy libraries (measured).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from test_source import HEAVY, all_imports, module_level_imports

ROOT = Path(__file__).resolve().parent.parent
TRAINERS_ALLOWED = {"mvc", "hooks", "trainers", "pydantic", "yaml", "git", "__future__", "."}
LAZY = HEAVY | {"tokenizers", "bitsandbytes"}


def _files(top: str) -> list[Path]:
    files = sorted((ROOT / top).rglob("*.py"))
    assert files
    return files


def test_trainers_module_level_imports_are_light():
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path in _files("trainers"):
        for line, mod in module_level_imports(ast.parse(path.read_text())):
            if mod in stdlib or mod in TRAINERS_ALLOWED:
                continue
            bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod} at module level")
    assert not bad, "trainers imports mvc, hooks and light libraries at module level; the ML stack lazily:\n" + "\n".join(bad)


def test_trainers_never_import_store_directly():
    bad = [f"{p.relative_to(ROOT)}:{line}" for p in _files("trainers") for line, mod in all_imports(ast.parse(p.read_text())) if mod == "store"]
    assert not bad, "trainers go through mvc (Repo, mvc.datasets, mvc.runs), not store:\n" + "\n".join(bad)


def test_cli_imports_trainers_only_inside_train():
    bad = []
    for path in _files("mvc/cli"):
        tree = ast.parse(path.read_text())
        for line, mod in module_level_imports(tree):
            if mod == "trainers":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports trainers at module level")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "train_cmd":
                for line, mod in all_imports(ast.Module(body=node.body, type_ignores=[])):
                    if mod == "trainers" and path.name != "cmd_train.py":
                        bad.append(f"{path.relative_to(ROOT)}:{line} imports trainers in {node.name}")
    assert not bad, "\n".join(bad)


def test_help_and_runs_import_no_ml_stack(tmp_path):
    from mvc.repo import Repo

    Repo.init(tmp_path / "r")
    probe = (
        "import json, sys\n"
        "from mvc.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(LAZY)!r})), file=sys.stderr)\n"
    )
    for args in (["--help"], ["runs"], ["runs", "--json"], ["train", "--help"]):
        proc = subprocess.run([sys.executable, "-c", probe, *args], cwd=tmp_path / "r", capture_output=True, text=True, timeout=60)
        loaded = json.loads(proc.stderr.strip().splitlines()[-1])
        assert not loaded, f"mvc {' '.join(args)} imported {loaded}"
