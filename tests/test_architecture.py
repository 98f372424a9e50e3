"""The shape of the code, kept by tests so a later change cannot quietly undo it:
layers that only point down (import-linter's contracts in pyproject.toml), exapt's own
imports at the top of each module, and no module reaching for another's private names."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "exapt"


def _lint_imports() -> str | None:
    beside = Path(sys.executable).with_name("lint-imports")
    return str(beside) if beside.exists() else shutil.which("lint-imports")


def test_import_linter_contracts_are_kept():
    exe = _lint_imports()
    if exe is None:
        pytest.fail("lint-imports is missing: `make test` installs import-linter with the dev extra")
    r = subprocess.run([exe, "--no-cache", "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                       cwd=ROOT / "src")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        yield path, (parts[:-1] if is_init else parts), is_init


def _target(parts, is_init, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = parts if is_init else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_exapts_own_imports_sit_at_the_top_of_each_module():
    """Function-level imports are for heavy third-party packages only (matplotlib,
    scikit-learn, transformers...); exapt's own modules import at the top, so a cycle shows
    at once instead of on the one code path that triggers it."""
    inside = []
    for path, parts, is_init in _modules():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and _target(parts, is_init, node).startswith("exapt"):
                        inside.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert inside == []


def test_no_module_imports_another_modules_private_names():
    private = []
    for path, parts, is_init in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and _target(parts, is_init, node).startswith("exapt"):
                private += [f"{path.relative_to(SRC)}:{node.lineno} {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []


def test_a_function_level_import_says_why_it_is_there():
    """Only a heavy package (matplotlib, scikit-learn, transformers...) is imported inside a
    function, to keep `exapt --help` and the commands that never need it fast; the line says so."""
    unexplained = []
    for path, parts, is_init in _modules():
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if not isinstance(node, (ast.Import, ast.ImportFrom)):
                        continue
                    if not any("# heavy" in line for line in lines[node.lineno - 1:node.end_lineno]):
                        unexplained.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert unexplained == []
