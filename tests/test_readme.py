"""Every ```python block of README.md and docs/*.md runs as written (in a fresh temporary folder)."""

import os
import re
import subprocess
import sys
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
def test_snippet_runs_as_written(path, index, code, tmp_path):
    # In a process of its own: a snippet may register a scorer or a family, which must not
    # leak into the other tests' registries. In a fresh folder: snippets write checkpoints.
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{path.name} python block {index} failed:\n{proc.stdout}\n{proc.stderr}"


def test_the_readme_headline_table_is_the_committed_one():
    """The README's results table is benchmarks/claim_curve.py's headline.md at the tuned scale
    (VTAB's --tune protocol), row for row: a number changed by hand, or results regenerated
    without the README, fails here."""
    headline = (ROOT / "benchmarks/results/pear_vit_long/tuned/headline.md").read_text(encoding="utf-8").splitlines()
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    missing = [line for line in headline if line not in readme]
    assert headline and not missing, f"README.md lacks these rows of headline.md: {missing}"


def test_docs_results_claim_tables_are_the_committed_claim_md():
    """docs/results.md's claim block is claim.md as benchmarks/claim_curve.py --docs copies it in."""
    claim = (ROOT / "benchmarks/results/pear_vit_long/claim.md").read_text(encoding="utf-8").splitlines()
    docs = (ROOT / "docs/results.md").read_text(encoding="utf-8").splitlines()
    begin = docs.index("<!-- claim.md: made by benchmarks/claim_curve.py --docs -->")
    block = docs[begin + 1 : docs.index("<!-- /claim.md -->")]
    assert block == [("#" + line) if line.startswith("## ") else line for line in claim[2:]]


def test_the_readme_names_every_ablation_the_suite_takes():
    from pear.harness.suites.grammar import grammar

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    choices = [form for form in grammar() if "{" in form]  # pear-share-{matched,...}: the registries' names
    assert choices and [form for form in choices if f"`{form}`" not in readme] == []
