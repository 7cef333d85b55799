"""Pear installs with pip like any library: a wheel into a fresh virtualenv, with the pinned torch
of requirements-lock.txt, gives a working `pear` without scripts/setup.sh.

Slow (a fresh venv gets torch: about two minutes from local disk), but part of the default run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-lock.txt"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _run(args: list, cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the project (the build writes into the tree it builds)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: the build uses this environment's setuptools instead of fetching one.
    out = _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-v", "-w", dist],
               cwd=src)
    assert "Deprecat" not in out, out  # e.g. setuptools on a TOML-table `project.license`
    (built,) = dist.glob("pear_peft-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh virtualenv with the wheel and its extras, dependencies at the lock's pins."""
    env_dir = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", env_dir], cwd=env_dir)
    _run([env_dir / "bin" / "python", "-m", "pip", "install", "--no-compile", f"{wheel}[lite0,lora]", "-c", LOCK],
         cwd=env_dir, timeout=900)
    yield env_dir
    shutil.rmtree(env_dir, ignore_errors=True)  # 5.6 GB, mostly torch: pytest keeps its last three temp roots


def test_wheel_holds_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "pear/py.typed" in names
    for weights in (ROOT / "src" / "pear" / "weights").glob("*.safetensors"):
        assert f"pear/weights/{weights.name}" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    requires_torch = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: torch")]
    assert requires_torch and all("<" not in line for line in requires_torch), requires_torch


def test_installed_pear_runs_from_the_venv(venv, tmp_path):
    python = venv / "bin" / "python"
    out = _run([python, "-c", "import pear, importlib.metadata as m; print(pear.__file__); print(pear.__version__); "
                "print(m.version('pear-peft'))"], cwd=tmp_path)
    location, version, dist_version = out.split()[:3]
    assert Path(location).is_relative_to(venv), location  # the installed copy, not the source tree
    assert version == dist_version != "0+unknown"
    assert "train" in _run([venv / "bin" / "pear", "--help"], cwd=tmp_path)
    assert "--weights" in _run([venv / "bin" / "pear", "train", "--help"], cwd=tmp_path)


def test_installed_pear_trains(venv, tmp_path, tiny_vtab, tiny_vit_args):
    common = ["--data", tiny_vtab, "--task", "toy", *tiny_vit_args, "--batch-size", "16", "--workers", "0",
              "--no-progress", "--device", "cpu"]
    _run([venv / "bin" / "pear", "train", *common, "--out", tmp_path / "pear", "--epochs", "2"], cwd=tmp_path)
    assert (tmp_path / "pear" / "checkpoint" / "adapters.safetensors").is_file()
    _run([venv / "bin" / "pear", "train", *common, "--out", tmp_path / "lora", "--epochs", "1", "--method", "lora"],
         cwd=tmp_path)  # the [lora] extra: peft
    assert (tmp_path / "lora" / "metrics.json").is_file()


def test_lite0_extra_brings_the_builtin_weights(venv, tmp_path):
    out = _run([venv / "bin" / "python", "-c", "from pear.harness.backbones import BUILTIN_WEIGHTS; "
                "print(BUILTIN_WEIGHTS['tf_efficientnet_lite0'].locate().stat().st_size)"], cwd=tmp_path)
    assert int(out.split()[-1]) > 10_000_000
