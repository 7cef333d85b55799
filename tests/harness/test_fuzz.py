"""Fuzzing every file format Pear reads from users: VTAB list files, IDX files, task
checkpoints (pear_config.json and the safetensors file), run options (as YAML, flags
and the suite hand them over), the training state's state.json, the suite's readers
(metrics.json, choice.json and args.yaml as --list and --aggregate read them), weights
folders (a transformers ViT's config.json and preprocessor_config.json, a timm export's
config.json), and the CLI on top of them.

The property is always the same: whatever the bytes, the reader returns a valid result
or raises PearError; no other exception, no read outside the task folder, no large
allocation. Each property runs a bounded number of examples so this file stays fast;
for a long campaign set PEAR_FUZZ_EXAMPLES, e.g.

    PEAR_FUZZ_EXAMPLES=5000 pytest tests/harness/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import struct
import sys
import tracemalloc
from unittest import mock
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import pear
from pear.checkpoint import CONFIG_FILE, TENSORS_FILE, read_checkpoint, seal
from pear.cli import main
from pear.errors import PearError
from pear.harness.backbones import create_backbone
from pear.harness.builders import read_idx
from pear.harness.data import MAX_INFERRED_CLASSES, read_list, task_info
from pear.harness import suite, tuning
from pear.harness import train as T
from pear.harness import results
from pear.harness.results import aggregate
from pear.harness.options import PEAR_FIELDS, TrainConfig, train_config_from_args
from pear.harness.state import PLAIN_FILES, STATE_FILES, load_state

EXAMPLES = int(os.environ.get("PEAR_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
# The CLI examples each rebuild a model and evaluate 40 images.
CLI_FUZZ = settings(FUZZ, max_examples=max(1, EXAMPLES * 3 // 4))

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


# ---------------------------------------------------------------- VTAB list files

@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """A task folder with real images, plus an existing image just outside it and
    symlinks that escape it (to a file, to a folder) or loop."""
    root = tmp_path_factory.mktemp("lists")
    task = root / "task"
    for rel in ("images/a.png", "images/sub/b.png", "c.png"):
        (task / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(task / rel)
    Image.new("RGB", (4, 4)).save(root / "outside.png")
    (task / "escape.png").symlink_to(root / "outside.png")
    (task / "escape_dir").symlink_to(root)
    (task / "inside.png").symlink_to(task / "images" / "a.png")
    (task / "loop").symlink_to(task / "loop")
    return task


PATHS = st.sampled_from([
    "images/a.png", "images/sub/b.png", "c.png", "./c.png", "images/../c.png", "inside.png",
    "../outside.png", "../../etc/passwd", "/etc/passwd", "escape.png", "escape_dir/outside.png",
    "escape_dir/task/c.png", "loop", "loop/x.png", "images", "missing.png", "images/a.png/x", "~/x.png",
    "a\x00b.png", "é.png", "x" * 5000, "//c.png", "\\c.png", "C:\\x.png",
]) | st.text(min_size=1, max_size=30)
LABELS = st.integers(-10**30, 10**30).map(str) | st.sampled_from(
    ["0", "1", "2", "3", "-0", "+1", "1.0", "0x1", "1e3", "nan", "٣", "9" * 5000, "00000000000000000000002"]
) | st.text(max_size=8)
LINE = st.tuples(PATHS, st.sampled_from([" ", "\t", "  ", " \t"]), LABELS, st.sampled_from(["", " ", "\r", " x"]))
LIST_TEXT = st.lists(LINE.map(lambda t: "".join(t)) | st.sampled_from(["", " ", "\r"]), max_size=6).map(
    lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))
LIST_BYTES = LIST_TEXT | st.binary(max_size=200) | st.tuples(LIST_TEXT, st.binary(min_size=1, max_size=4),
                                                             st.integers(0, 200)).map(
    lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:])


_opened: list[str] | None = None  # files opened while recording, from the interpreter's audit events


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; records nothing outside `opened_files`


@contextlib.contextmanager
def opened_files():
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def _check_list_result(items, task: Path, num_classes: int | None) -> None:
    root = task.resolve()
    for path, label in items:
        assert path.resolve().is_relative_to(root) and path.is_file(), path
        assert label >= 0 and (num_classes is None or label < num_classes)


@FUZZ
@given(data=LIST_BYTES, num_classes=st.sampled_from([1, 3, 1000]))
def test_list_files(task, data, num_classes):
    path = task / "fuzz.txt"
    path.write_bytes(data)
    with opened_files() as opened:
        try:
            items = read_list(path, task, num_classes)
        except PearError:
            items = []
    assert opened == [str(path)]  # the list file only: images are checked, never read
    _check_list_result(items, task, num_classes)


@FUZZ
@given(train=LIST_BYTES, test=LIST_BYTES)
def test_custom_task_class_count(task, train, test):
    """A task without classes.txt takes its class count from the labels."""
    (task / "train800val200.txt").write_bytes(train)
    (task / "test.txt").write_bytes(test)
    try:
        info = task_info(task.parent, task.name)
    except PearError:
        return
    assert 1 <= info.num_classes <= MAX_INFERRED_CLASSES
    for name in ("train800val200.txt", "test.txt"):
        _check_list_result(read_list(task / name, task, info.num_classes), task, info.num_classes)


# ---------------------------------------------------------------- IDX files

IDX_HEADERS = st.tuples(st.sampled_from([0x801, 0x803, 0x802, 0x0, 0xFFFFFFFF]),
                        st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 40), min_size=0, max_size=3)).map(
    lambda t: struct.pack(">I", t[0]) + b"".join(struct.pack(">I", d) for d in t[1]))
IDX_BYTES = st.one_of(
    st.binary(max_size=64),
    st.tuples(IDX_HEADERS, st.binary(max_size=64)).map(lambda t: t[0] + t[1]),
)


@FUZZ
@given(data=IDX_BYTES, gz=st.sampled_from(["plain", "gzip", "truncated gzip"]))
def test_idx_files(tmp_path_factory, data, gz):
    path = tmp_path_factory.getbasetemp() / "fuzz.idx"
    if gz != "plain":
        data = gzip.compress(data)
        if gz == "truncated gzip":
            data = data[:len(data) // 2]
    path.write_bytes(data)
    tracemalloc.start()
    try:
        array = read_idx(path)
    except PearError:
        array = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"read_idx allocated {peak} bytes for a {len(data)}-byte file"
    if array is not None:
        assert array.dtype == np.uint8 and array.ndim in (1, 3) and array.nbytes <= len(data)


# ---------------------------------------------------------------- task checkpoints

def _backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32, patch_size=8,
                             depth=2, embed_dim=32, num_heads=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(folder, pristine file bytes, backbone) of a pruned, shared tiny-ViT task."""
    backbone = _backbone()
    model = copy.deepcopy(backbone)
    pear.attach(model, pear.PearConfig(rank=2, prune_ratio=0.5, knowledge="frozen"))
    scores = {name: float(i) for i, name in enumerate(pear.slots(model))}
    pear.prune_and_share(model, pear.make_plan(scores, pear.PearConfig(rank=2, prune_ratio=0.5), model))
    folder = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    pear.save(model, folder, backbone="vit_tiny_patch16_224", class_names=["a", "b", "c"])
    pear.load(folder, copy.deepcopy(backbone))  # the pristine checkpoint loads
    return Quiet((folder, {f.name: f.read_bytes() for f in folder.iterdir()}, backbone))


class Quiet(tuple):
    """A fixture value that hypothesis prints as one word in a failure report."""

    def __repr__(self) -> str:
        return "<fixture>"


def _paths(value, prefix=()):
    """Every (path into a JSON value) there is, the root included."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _mutate(doc, path, action: str, value):
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def json_mutation(draw, doc):
    """`doc` with one value somewhere replaced by random JSON, or deleted."""
    doc = copy.deepcopy(doc)
    paths = list(_paths(doc))
    path = paths[draw(st.integers(0, len(paths) - 1))]
    return _mutate(doc, path, draw(st.sampled_from(["replace", "replace", "delete"])), draw(JSON))


def _write(folder: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _only_pear_errors(folder: Path, backbone: torch.nn.Module) -> None:
    try:
        read_checkpoint(folder)
    except PearError:
        pass
    try:
        pear.load(folder, copy.deepcopy(backbone))
    except PearError:
        pass


@st.composite
def config_texts(draw, pristine: bytes):
    doc = json.loads(pristine)
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "truncate", "bytes"]))
    if kind == "mutate":
        return json.dumps(draw(json_mutation(doc))).encode()
    if kind == "truncate":
        return pristine[:draw(st.integers(0, len(pristine) - 1))]
    return draw(st.binary(max_size=300))


def _resealed(text: bytes) -> bytes:
    """`text` with its field hashes recomputed (when it is a JSON object), so a fuzzed edit
    reaches the type and consistency checks instead of stopping at the seal."""
    try:
        return json.dumps(seal(json.loads(text))).encode()
    except (ValueError, TypeError, AttributeError, RecursionError):
        return text


@FUZZ
@given(data=st.data(), reseal=st.booleans())
def test_pear_config_json(checkpoint, tmp_path_factory, data, reseal):
    folder, pristine, backbone = checkpoint
    text = data.draw(config_texts(pristine[CONFIG_FILE]))
    fuzzed = tmp_path_factory.getbasetemp() / "fuzzed-config"
    _write(fuzzed, {**pristine, CONFIG_FILE: _resealed(text) if reseal else text})
    _only_pear_errors(fuzzed, backbone)


def _split_safetensors(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


@st.composite
def safetensors_files(draw, pristine: bytes):
    header, body = _split_safetensors(pristine)
    kind = draw(st.sampled_from(["length", "header", "header", "truncate", "flip"]))
    if kind == "length":
        n = draw(st.integers(0, 2**64 - 1) | st.integers(-16, 16).map(lambda d: len(pristine) - len(body) - 8 + d)
                 .filter(lambda n: n >= 0))
        return struct.pack("<Q", n) + pristine[8:]
    if kind == "header":
        text = json.dumps(draw(json_mutation(header))).encode()
        return struct.pack("<Q", len(text)) + text + body
    if kind == "truncate":
        return pristine[:draw(st.integers(0, len(pristine) - 1))]
    at = draw(st.integers(0, len(pristine) - 1))
    return pristine[:at] + bytes([pristine[at] ^ draw(st.integers(1, 255))]) + pristine[at + 1:]


@FUZZ
@given(data=st.data(), rehash=st.booleans())
def test_safetensors_file(checkpoint, tmp_path_factory, data, rehash):
    """`rehash`: the JSON's SHA-256 is updated to match, so the bytes reach the
    safetensors parser instead of stopping at the hash check."""
    folder, pristine, backbone = checkpoint
    raw = data.draw(safetensors_files(pristine[TENSORS_FILE]))
    config = json.loads(pristine[CONFIG_FILE])
    if rehash:
        config = seal({**config, "tensors_sha256": hashlib.sha256(raw).hexdigest()})
    fuzzed = tmp_path_factory.getbasetemp() / "fuzzed-tensors"
    _write(fuzzed, {TENSORS_FILE: raw, CONFIG_FILE: json.dumps(config).encode()})
    _only_pear_errors(fuzzed, backbone)


# ---------------------------------------------------------------- the CLI on fuzzed checkpoints

@pytest.fixture(scope="module", params=["pear", "linear"])
def run(request, tiny_run, tiny_vtab, tiny_vit_args, tmp_path_factory):
    """(run folder, its checkpoint's tensor and JSON file names, pristine checkpoint
    files): a copy of the session's tiny_run (a Pear task checkpoint), or a 1-epoch
    linear run (a plain checkpoint)."""
    out = tmp_path_factory.mktemp("fuzzrun") / "run"
    if request.param == "pear":
        shutil.copytree(tiny_run.run, out)
        names = (TENSORS_FILE, CONFIG_FILE)
    else:
        assert _cli(["train", "--data", str(tiny_vtab), "--task", "toy", "--out", str(out), *tiny_vit_args,
                     "--method", "linear", "--epochs", "1", "--batch-size", "16", "--workers", "0",
                     "--no-progress"])[0] == 0
        names = PLAIN_FILES
    return Quiet((out, names, {f.name: f.read_bytes() for f in (out / "checkpoint").iterdir()}))


def _inspection_available() -> bool:
    try:
        import pear.harness.inspection  # noqa: F401
    except ImportError:
        return False
    return True


@st.composite
def checkpoint_files(draw, names: tuple[str, str], pristine: dict[str, bytes]):
    """Either file fuzzed; a fuzzed tensor file gets its hash recorded in the JSON."""
    tensors_file, config_file = names
    if draw(st.booleans()):
        return {**pristine, config_file: draw(config_texts(pristine[config_file]))}
    raw = draw(safetensors_files(pristine[tensors_file]))
    config = seal({**json.loads(pristine[config_file]), "tensors_sha256": hashlib.sha256(raw).hexdigest()})
    return {tensors_file: raw, config_file: json.dumps(config).encode()}


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


@pytest.mark.parametrize("command", ["eval", "inspect"])
def test_cli_on_fuzzed_checkpoints(run, command):
    """Exit 0 (a harmless edit, e.g. of a score) or 2 with one line of error, nothing else."""
    if command == "inspect" and not _inspection_available():
        pytest.skip("pear.harness.inspection (pear inspect) does not exist yet")
    folder, names, pristine = run
    argv = ["eval", "--run", str(folder), "--device", "cpu"] if command == "eval" else ["inspect", str(folder)]

    @CLI_FUZZ
    @given(files=checkpoint_files(names, pristine))
    def fuzz(files):
        _write(folder / "checkpoint", files)
        rc, err = _cli(argv)
        assert rc in (0, 2), err
        if rc == 2:
            assert err.startswith("pear: error: ") and err.count("\n") == 1, err

    try:
        fuzz()
    finally:
        _write(folder / "checkpoint", pristine)


# ---------------------------------------------------------------- run options (YAML / CLI / suite) and state.json

# Values of every kind for every option: whatever a YAML file or the suite hands
# TrainConfig, it is a valid config or one PearError, never another exception.
OPTION_VALUES = JSON | st.sampled_from(["tpu", "cuda:99x", "nan", "-1", "1e-3", "yes", "no", ""]) | st.floats() \
    | st.integers(-3, 300)


OPTION_NAMES = sorted({f.name for f in dataclasses.fields(TrainConfig)} | set(PEAR_FIELDS) | {"bogus"})


@FUZZ
@given(values=st.dictionaries(st.sampled_from(OPTION_NAMES), OPTION_VALUES, max_size=5))
def test_train_options(values):
    base = {"data": "d", "task": "t", "out": "o", "backbone": "vit_tiny_patch16_224", "img_size": 32}
    try:
        cfg = train_config_from_args({**base, **values})
    except PearError:
        return
    assert isinstance(cfg, TrainConfig) and cfg.epochs >= 1 and cfg.workers >= 0 and math.isfinite(cfg.cache_gb)
    assert not (cfg.overwrite and cfg.resume)


@pytest.fixture(scope="module")
def saved_state(tiny_run):
    """(run folder, pristine state files) of the session's finished tiny run."""
    state = tiny_run.run / "state"
    return Quiet((tiny_run.run, {f.name: f.read_bytes() for f in state.iterdir()}))


@FUZZ
@given(data=st.data(), reseal=st.booleans())
def test_state_json(saved_state, tmp_path_factory, data, reseal):
    """`reseal`: the fuzzed state.json gets its field hashes recomputed, so the edit
    reaches the type and consistency checks instead of stopping at the seal."""
    run, pristine = saved_state
    text = data.draw(config_texts(pristine[STATE_FILES[1]]))
    text = _resealed(text) if reseal else text
    fuzzed = tmp_path_factory.getbasetemp() / "fuzzed-state"
    _write(fuzzed, {**pristine, STATE_FILES[1]: text})
    cfg = TrainConfig.from_dict({**yaml.safe_load((run / "args.yaml").read_text()), "resume": False,
                                 "overwrite": False})
    model = _state_model(cfg)
    optimizer = T.make_optimizer(model, cfg.lr, cfg.wd)
    try:
        load_state(fuzzed, model, optimizer, None, torch.device("cpu"))
    except PearError:
        pass


_STATE_MODELS: dict = {}


def _state_model(cfg):
    """A fresh copy of the run's model (built once: building is the slow part)."""
    if "model" not in _STATE_MODELS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tiny backbone is randomly initialised by design
            _STATE_MODELS["model"] = T.build(cfg, 3, torch.device("cpu"))[0]
    return copy.deepcopy(_STATE_MODELS["model"])


# ---------------------------------------------------------------- the suite's readers: metrics.json, choice.json, args.yaml

SUITE = dict(tasks=["toy"], methods=["linear", "pear"], seeds=[0])
SUITE_BASE = {"backbone": "vit_tiny_patch16_224", "img_size": 32, "epochs": 2, "workers": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def suite_folder(tiny_vtab, tmp_path_factory):
    """(data, suite folder, pristine files) of a --tune suite whose runs 'finished' (each with the
    args.yaml and metrics.json a run writes) and whose choice for pear is recorded; nothing trains."""
    out = tmp_path_factory.mktemp("suite")
    runs = suite.sweep(str(tiny_vtab), **SUITE, out=str(out), base=SUITE_BASE, tune=True)
    for run in runs:
        run.dir.mkdir(parents=True)
        (run.dir / "args.yaml").write_text(yaml.safe_dump(run.cfg.to_dict(), sort_keys=False))
        (run.dir / "history.json").write_text(json.dumps([{"epoch": 1, "val_acc": 50.0 + run.cfg.pear.scale}]))
        (run.dir / "metrics.json").write_text(json.dumps(
            {"task": run.task, "method": run.cfg.method, "seed": run.seed, "test_acc": 50.0, "trainable_params": 10,
             "checkpoint_file_bytes": 1000, "adapter_bytes": 100, "device": "cpu", "backbone": "vit", "epochs": 2}))
    tuning.choose(out, "toy", "pear")  # the largest scale, which the pear run was not made with: remake it
    pear = next(r for r in suite.sweep(str(tiny_vtab), **SUITE, out=str(out), base=SUITE_BASE, tune=True)
                if r.label == "toy/pear/seed0")
    (pear.dir / "args.yaml").write_text(yaml.safe_dump(pear.cfg.to_dict(), sort_keys=False))
    files = {name: (out / name).read_bytes() for name in (
        "runs/toy/pear/seed0/metrics.json", "runs/toy/pear/seed0/args.yaml", "tuning/toy/pear/choice.json")}
    return Quiet((tiny_vtab, out, files))


def _suite_reads(data: Path, out: Path, which: str) -> None:
    """What --list and --aggregate read of the fuzzed file: a valid result or one PearError.
    The plot is left out (it draws only values the reader has checked, and would make a
    5,000-example campaign take a quarter of an hour)."""
    try:
        with mock.patch.object(results, "_plot", lambda rows, path: None):
            runs = suite.sweep(str(data), **SUITE, out=str(out), base=SUITE_BASE, tune=which == "choice")
            if which == "args":
                suite.check_folders([r for r in runs if r.label == "toy/pear/seed0"])
                return
            rows = aggregate(out)
    except PearError:
        return
    assert all(isinstance(r["seed"], int) and math.isfinite(r["test_acc"]) for r in rows)


@contextlib.contextmanager
def _fuzzed(out: Path, files: dict[str, bytes], name: str, text: bytes):
    (out / name).write_bytes(text)
    try:
        yield
    finally:
        (out / name).write_bytes(files[name])


@st.composite
def yaml_texts(draw, pristine: bytes):
    """args.yaml texts: the pristine options with one value replaced or deleted, cut short, or bytes."""
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "truncate", "bytes"]))
    if kind == "mutate":
        return yaml.safe_dump(draw(json_mutation(yaml.safe_load(pristine)))).encode()
    if kind == "truncate":
        return pristine[:draw(st.integers(0, len(pristine) - 1))]
    return draw(st.binary(max_size=300))


# reader -> (the fuzzed file in the suite folder, its texts)
SUITE_FILES = {"metrics": ("runs/toy/pear/seed0/metrics.json", config_texts),
               "choice": ("tuning/toy/pear/choice.json", config_texts),
               "args": ("runs/toy/pear/seed0/args.yaml", yaml_texts)}


@pytest.mark.parametrize("which", list(SUITE_FILES))
@FUZZ
@given(data=st.data())
def test_suite_files(suite_folder, which, data):
    root, out, files = suite_folder
    name, texts = SUITE_FILES[which]
    with _fuzzed(out, files, name, data.draw(texts(files[name]))):
        _suite_reads(root, out, which)


def test_the_suite_fixture_reads_clean(suite_folder):
    """The fuzzers start from a suite that --list and --aggregate accept."""
    root, out, _ = suite_folder
    suite.list_runs(suite.sweep(str(root), **SUITE, out=str(out), base=SUITE_BASE, tune=True))
    assert len(aggregate(out)) == 2


# ---------------------------------------------------------------- weights folders (hub.py)

def _hub_folders(root: Path) -> dict[str, tuple[Path, dict[str, bytes]]]:
    """A tiny transformers ViT folder and a tiny timm folder, each as (folder, its files' bytes)."""
    from safetensors.torch import save_file
    from timm.models import save_for_hf

    hf = root / "hf"
    hf.mkdir()
    sizes = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24, image_size=8,
                 patch_size=4, num_channels=3)
    (hf / "config.json").write_text(json.dumps({"model_type": "vit", "architectures": ["ViTModel"],
                                                "hidden_act": "gelu", "layer_norm_eps": 1e-12, "qkv_bias": True,
                                                **sizes}))
    (hf / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5],
                                                             "image_std": [0.5, 0.5, 0.5],
                                                             "size": {"height": 8, "width": 8}}))
    d, inner, tokens = 16, 24, 5
    tensors = {"embeddings.cls_token": torch.zeros(1, 1, d), "embeddings.position_embeddings": torch.zeros(1, tokens, d),
               "embeddings.patch_embeddings.projection.weight": torch.zeros(d, 3, 4, 4),
               "embeddings.patch_embeddings.projection.bias": torch.zeros(d),
               "layernorm.weight": torch.ones(d), "layernorm.bias": torch.zeros(d)}
    layer = "encoder.layer.0."
    for name, shape in {"layernorm_before": (d,), "layernorm_after": (d,)}.items():
        tensors.update({f"{layer}{name}.weight": torch.ones(shape), f"{layer}{name}.bias": torch.zeros(shape)})
    for name, (rows, cols) in {"attention.attention.query": (d, d), "attention.attention.key": (d, d),
                               "attention.attention.value": (d, d), "attention.output.dense": (d, d),
                               "intermediate.dense": (inner, d), "output.dense": (d, inner)}.items():
        tensors.update({f"{layer}{name}.weight": torch.zeros(rows, cols), f"{layer}{name}.bias": torch.zeros(rows)})
    save_file(tensors, str(hf / "model.safetensors"))
    timm_dir = root / "timm"
    source = timm.create_model("vit_tiny_patch16_224", depth=1, embed_dim=16, num_heads=2, patch_size=4, img_size=8)
    save_for_hf(source, str(timm_dir), safe_serialization=True)
    return {kind: (folder, {p.name: p.read_bytes() for p in folder.iterdir()}) for kind, folder in
            (("transformers", hf), ("timm", timm_dir))}


@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory):
    folders = _hub_folders(tmp_path_factory.mktemp("hub"))
    for folder, _ in folders.values():
        create_backbone(None, 3, weights=folder)  # the pristine folders load
    return folders


def _fuzz_folder_file(hub_folders, tmp_path_factory, data, kind: str, name: str) -> None:
    _, files = hub_folders[kind]
    fuzzed = tmp_path_factory.getbasetemp() / f"fuzzed-{kind}"
    _write(fuzzed, {**files, name: data.draw(config_texts(files[name]))})
    try:
        create_backbone(None, 3, weights=fuzzed)
    except PearError:
        pass


@FUZZ
@given(data=st.data())
def test_transformers_config_json(hub_folders, tmp_path_factory, data):
    _fuzz_folder_file(hub_folders, tmp_path_factory, data, "transformers", "config.json")


@FUZZ
@given(data=st.data())
def test_transformers_preprocessor_config_json(hub_folders, tmp_path_factory, data):
    _fuzz_folder_file(hub_folders, tmp_path_factory, data, "transformers", "preprocessor_config.json")


@FUZZ
@given(data=st.data())
def test_timm_config_json(hub_folders, tmp_path_factory, data):
    _fuzz_folder_file(hub_folders, tmp_path_factory, data, "timm", "config.json")
