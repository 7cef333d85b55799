#!/usr/bin/env bash
# Set up Pear on a fresh machine: .venv at the repo root with the pinned stack
# (requirements-lock.txt) and Pear itself (editable); Debian's Fashion-MNIST package
# when apt is available (the built-in demo dataset). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
        echo "setup: installing Debian package dataset-fashion-mnist"
        $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null \
            || echo "setup: warning: could not install dataset-fashion-mnist; 'pear demo' needs it" >&2
    fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
echo "setup: installing the pinned stack (torch 2.14.1 is large; the first run takes a few minutes)"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-lock.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
echo "setup: done ($(.venv/bin/python -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'))"
