"""Layering rules read from the source (as dulwich's tests/test_source.py does), and import costs measured.

DESIGN.md, "Import rules":
- ``store`` imports only the standard library, xxhash, pyfastcdc, fsspec and itself.
- ``mvc`` and ``hooks`` never import the heavy ML stack at module level (only inside functions).
- Only ``mvc/cli`` reads environment variables.
- ``mvc --help``, ``mvc log`` and ``mvc status`` never import torch or transformers.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORE_ALLOWED = {"xxhash", "pyfastcdc", "fsspec", "store"}
HEAVY = {"torch", "transformers", "trl", "peft", "safetensors", "numpy", "accelerate", "datasets"}

# hooks/scripts.py passes the caller's environment on to the hook subprocess (plus the MVC_*
# variables): a hook must see PATH, HOME, virtualenvs etc. like a git hook does. It copies the
# environment verbatim and makes no decision on any variable's value, so it is not "reading
# configuration from the environment", which is what the rule keeps inside mvc/cli.
ENVIRON_ALLOWED = {("hooks/scripts.py", "run_hook")}


def _py_files(*tops: str) -> list[Path]:
    files = []
    for top in tops:
        files.extend(sorted((ROOT / top).rglob("*.py")))
    assert files, f"no source found under {tops}"
    return files


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative import: inside the package
            return ["."]
        return [node.module.split(".")[0]] if node.module else []
    return [a.name.split(".")[0] for a in node.names]


def all_imports(tree: ast.Module) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.extend((node.lineno, m) for m in _top_modules(node))
        # importlib.import_module("x") / __import__("x") with a literal name
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value.split(".")[0]))
    return out


def module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Imports executed when the module is imported: everything outside function bodies and
    outside ``if TYPE_CHECKING:`` blocks (class bodies and try/if at module level count)."""
    out: list[tuple[int, str]] = []

    def visit(stmts: list[ast.AST]) -> None:
        for node in stmts:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.extend((node.lineno, m) for m in _top_modules(node))
                continue
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
                continue
            # bodies of class / if / try / except / with / for at module level run at import
            for field in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    visit(sub)

    visit(tree.body)
    return out


# -- the checker itself must be able to fail -------------------------------------------------
def test_checker_finds_module_level_and_ignores_lazy_imports():
    src = textwrap.dedent(
        """
        import os
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import torch
        try:
            import numpy as np
        except ImportError:
            import transformers
        class A:
            import peft
        def f():
            import trl
        """
    )
    found = {m for _l, m in module_level_imports(ast.parse(src))}
    assert found == {"os", "typing", "numpy", "transformers", "peft"}
    assert {m for _l, m in all_imports(ast.parse(src))} >= {"torch", "trl"}
    assert environ_reads(ast.parse("import os\nx = os.environ.get('A')\ny = os.getenv('B')\nfrom os import environ\n"))


# -- store ----------------------------------------------------------------------------------
def test_store_imports_only_stdlib_and_allowed():
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path in _py_files("store"):
        for line, mod in all_imports(_parse(path)):
            if mod == "." or mod in stdlib or mod in STORE_ALLOWED or mod == "__future__":
                continue
            bad.append(f"{_rel(path)}:{line} imports {mod}")
    assert not bad, "store/ may import only the standard library, xxhash, pyfastcdc, fsspec and store:\n" + "\n".join(bad)


def test_store_never_imports_upper_layers():
    bad = []
    for path in _py_files("store"):
        for line, mod in all_imports(_parse(path)):
            if mod in ("mvc", "hooks", "trainers", "duckdb", "typer", "networkx", "torch"):
                bad.append(f"{_rel(path)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


# -- mvc and hooks --------------------------------------------------------------------------
@pytest.mark.parametrize("top", ["mvc", "hooks"])
def test_no_heavy_imports_at_module_level(top):
    bad = []
    for path in _py_files(top):
        for line, mod in module_level_imports(_parse(path)):
            if mod in HEAVY:
                bad.append(f"{_rel(path)}:{line} imports {mod} at module level")
    assert not bad, "heavy libraries must be imported inside the functions that need them:\n" + "\n".join(bad)


def test_hooks_do_not_import_porcelain_cli():
    bad = []
    for path in _py_files("hooks"):
        for line, node in ((n.lineno, n) for n in ast.walk(_parse(path)) if isinstance(n, ast.ImportFrom) and n.module):
            if node.module.startswith("mvc.cli"):
                bad.append(f"{_rel(path)}:{line} imports {node.module}")
    assert not bad, "\n".join(bad)


# -- environment variables ----------------------------------------------------------------
def environ_reads(tree: ast.Module) -> list[tuple[int, str | None]]:
    """(line, enclosing function name) of every os.environ / os.getenv / os.environb use."""
    out: list[tuple[int, str | None]] = []

    def visit(node: ast.AST, func: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Attribute) and child.attr in ("environ", "environb", "getenv", "getenvb", "putenv"):
                if isinstance(child.value, ast.Name) and child.value.id == "os":
                    out.append((child.lineno, func))
            if isinstance(child, ast.ImportFrom) and child.module == "os":
                if any(a.name in ("environ", "environb", "getenv", "getenvb") for a in child.names):
                    out.append((child.lineno, func))
            visit(child, f)

    visit(tree, None)
    return out


def test_only_cli_reads_environment():
    bad = []
    allowed_seen = set()
    for path in _py_files("store", "mvc", "hooks"):
        rel = _rel(path)
        if rel.startswith("mvc/cli/"):
            continue
        for line, func in environ_reads(_parse(path)):
            if (rel, func) in ENVIRON_ALLOWED:
                allowed_seen.add((rel, func))
                continue
            bad.append(f"{rel}:{line} (in {func or 'module'}) reads the environment")
    assert not bad, "only mvc/cli reads environment variables; pass values in as arguments instead:\n" + "\n".join(bad)
    # the exception is still needed (otherwise drop it from ENVIRON_ALLOWED)
    assert allowed_seen == ENVIRON_ALLOWED


def test_cli_does_read_environment():
    # sanity: the checker sees the reads that are allowed (MVC_DEBUG, MVC_REPO ...)
    hits = [h for p in _py_files("mvc/cli") for h in environ_reads(_parse(p))]
    assert hits


# -- measured: what the fast commands actually import -------------------------------------
PROBE = textwrap.dedent(
    """
    import atexit, json, sys
    HEAVY = {heavy!r}

    def report():
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
        with open({out!r}, "w") as f:
            json.dump(loaded, f)

    atexit.register(report)
    sys.argv = ["mvc", *{args!r}]
    from mvc.cli import main
    main({args!r})
    """
)


def _probe(tmp_path: Path, args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    out = tmp_path / f"modules-{len(list(tmp_path.iterdir()))}.json"
    script = PROBE.format(heavy=sorted(HEAVY), out=str(out), args=list(args))
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.exists(), f"probe did not report: {proc.stderr}"
    return proc, json.loads(out.read_text())


@pytest.fixture
def committed(tiny_model, repo, mvc):
    mvc("commit", str(tiny_model), "-m", "base", cwd=repo.root, check=True)
    return repo


def test_help_log_status_never_import_torch(tmp_path, committed):
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    for args in (["--help"], ["log"], ["status"], ["status", "--json"], ["log", "--graph"]):
        proc, loaded = _probe(probe_dir, args, committed.root)
        assert proc.returncode == 0, f"mvc {' '.join(args)}: {proc.stderr}"
        assert not loaded, f"mvc {' '.join(args)} imported {loaded}"


def test_importtime_of_help(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mvc", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "mvc.cli" in imported  # the parse really saw our modules
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"mvc --help imported {heavy}"
