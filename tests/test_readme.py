"""Every ```python block of README.md and docs/*.md runs as written (in a fresh temporary folder)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SNIPPETS = [(f, i, code) for f in FILES for i, code in enumerate(BLOCK.findall(f.read_text(encoding="utf-8")))]


def test_the_readme_has_python_to_run():
    assert any(f.name == "README.md" for f, _, _ in SNIPPETS)


@pytest.mark.parametrize("path, index, code", SNIPPETS,
                         ids=[f"{f.relative_to(ROOT)}[{i}]" for f, i, _ in SNIPPETS])
def test_snippet_runs_as_written(path, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets write checkpoints into the working folder
    exec(compile(code, f"{path.name} python block {index}", "exec"), {"__name__": "__readme__"})
