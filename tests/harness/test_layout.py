"""The harness's folder layout: every former flat module path is its new home under another
name (the same module object, whichever is imported first), and no module or function
outgrows the size the project keeps to."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import pear.harness
from pear.errors import PearError
from pear.harness import _MOVED

HARNESS = Path(pear.harness.__file__).parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


@pytest.mark.parametrize("old", sorted(_MOVED))
def test_a_former_path_is_the_module_at_its_new_home(old):
    moved = importlib.import_module(f"pear.harness.{old}")
    home = importlib.import_module(f"pear.harness.{_MOVED[old]}")
    assert moved is home
    assert getattr(pear.harness, old) is home  # `from pear.harness import NAME` too
    assert home.__name__ == home.__spec__.name == f"pear.harness.{_MOVED[old]}"  # it still names its home
    assert not (HARNESS / f"{old}.py").exists()  # a file there would shadow the alias


def test_the_alias_holds_whichever_name_is_imported_first():
    code = ("import sys, pear.harness.{0} as a, pear.harness.{1} as b; "
            "assert a is b is sys.modules['pear.harness.{0}'] is sys.modules['pear.harness.{1}']")
    for first, second in (("suite", "suites.suite"), ("suites.suite", "suite")):
        subprocess.run([sys.executable, "-c", code.format(first, second)], check=True, timeout=120)


def test_an_attribute_set_through_a_former_path_changes_the_code_at_its_new_home(tmp_path, monkeypatch):
    from pear.harness import data
    from pear.harness.datasets.vtab import read_list

    task = tmp_path / "toy"
    (task / "images").mkdir(parents=True)
    (task / "list.txt").write_text("images/a.png 0\n" * 4)
    monkeypatch.setattr(data, "MAX_LIST_BYTES", 10)
    with pytest.raises(PearError, match="list.txt: list file is 60 bytes; expected a text file under 10 bytes"):
        read_list(task / "list.txt", task, 1)


def test_an_unknown_name_is_still_not_a_module():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("pear.harness.no_such_module")


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(HARNESS)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_harness_module_or_function_outgrows_its_size():
    modules = sorted(HARNESS.rglob("*.py"))
    long_modules = [f"{p.relative_to(HARNESS)} ({n} lines)" for p in modules
                    if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert long_modules == [], f"split these modules (at most {MAX_MODULE_LINES} lines)"
    assert [f for p in modules for f in _long_functions(p)] == [], \
        f"split these functions (at most {MAX_FUNCTION_LINES} lines)"
