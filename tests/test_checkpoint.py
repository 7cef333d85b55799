import itertools
import json
import os
import select
import signal
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import pear
from pear import ImportanceTracker, PearConfig, PearError
from pear.atomic import sha256_file
from pear.checkpoint import CONFIG_FILE, TENSORS_FILE, fingerprint, read_checkpoint
from pear import freeze_norm_stats

VIT = "vit_tiny_patch16_224"
CNN = "tf_efficientnet_lite0"



def fit(model, x, y, steps, tracker=None):
    """A few AdamW steps with the frozen backbone's BatchNorm statistics held still, as
    the training harness does: the checkpoint fingerprint covers those buffers."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    freeze_norm_stats(model)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if tracker is not None:
            tracker.update()
        opt.step()
    model.eval()


def batch(kind, n=4):
    g = torch.Generator().manual_seed(1)
    size = 64 if kind == "lite0" else 32
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


def trained(model_factory, kind="vit", save_unpruned_to=None, **cfg):
    """A Pear model trained for a few steps, pruned by its measured importance, then
    trained on (so shared adapters move away from their pruning-time values)."""
    model = model_factory(kind)
    pear.attach(model, PearConfig(**cfg))
    x, y = batch(kind)
    tracker = ImportanceTracker(model)
    fit(model, x, y, 3, tracker)
    if save_unpruned_to is not None:
        pear.save(model, save_unpruned_to, backbone=VIT)
    plan = pear.make_plan(tracker.scores(), pear.adapters.pear_state(model).config, model)
    tracker.close()
    pear.prune_and_share(model, plan)
    fit(model, x, y, 1)
    return model, x


def snapshot(backbone):
    return {k: v.clone() for k, v in backbone.state_dict().items()}


def assert_untouched(backbone, before):
    after = backbone.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert pear.slots(backbone) == {} and getattr(backbone, "pear_state", None) is None


@pytest.mark.parametrize("kind,knowledge,share", [
    ("vit", "merge", "rank"),
    ("vit", "none", "rank"),
    ("vit", "frozen", "rank"),
    ("vit", "merge", "none"),
    ("lite0", "merge", "rank"),
])
def test_round_trip_is_bitwise_and_shares_modules(tmp_path, model_factory, kind, knowledge, share):
    model, x = trained(model_factory, kind, knowledge=knowledge, share=share, prune_ratio=0.5)
    name = VIT if kind == "vit" else CNN
    pear.save(model, tmp_path / "ck", backbone=name, class_names=list("abcde"))

    backbone = model_factory(kind)
    backbone.reset_classifier(7)  # a head of another size must not matter, nor be touched
    before = snapshot(backbone)
    loaded = pear.load(tmp_path / "ck", backbone, backbone_name=name).eval()
    assert_untouched(backbone, before)

    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    smap = pear.share_map(model)
    assert pear.share_map(loaded) == smap
    assert (len(smap) > 0) == (share != "none")
    sl = pear.slots(loaded)
    for pos, src in smap.items():
        assert sl[pos].adapter is sl[src].adapter  # one module again, not a copy
    for pos, s in pear.slots(model).items():
        assert (sl[pos].adapter is None) == (s.adapter is None)
        assert (sl[pos].frozen is None) == (s.frozen is None)
        assert sl[pos].info.pruned == s.info.pruned
    assert all(not p.requires_grad for s in sl.values() if s.frozen is not None for p in s.frozen.parameters())
    assert (knowledge == "frozen") == any(s.frozen is not None for s in sl.values())
    mine, theirs = pear.report(loaded), pear.report(model)
    assert (mine["positions"], mine["totals"]) == (theirs["positions"], theirs["totals"])
    assert read_checkpoint(tmp_path / "ck").class_names == list("abcde")


def tensor_bytes(ckpt, prefix):
    """Bytes of the stored tensors whose names start with `prefix` (the head excluded by it)."""
    with safe_open(str(ckpt / TENSORS_FILE), "pt") as f:
        return sum(_nbytes(f.get_tensor(k)) for k in f.keys() if k.startswith(prefix))


def _nbytes(t):
    return t.numel() * t.element_size()


@pytest.mark.parametrize("knowledge", ["merge", "none", "frozen"])
def test_pruned_checkpoint_stores_half_the_adapter_bytes(tmp_path, model_factory, knowledge):
    model, _ = trained(model_factory, knowledge=knowledge, prune_ratio=0.5, save_unpruned_to=tmp_path / "full")
    pear.save(model, tmp_path / "half", backbone=VIT)
    full, half = tensor_bytes(tmp_path / "full", "adapters."), tensor_bytes(tmp_path / "half", "adapters.")
    frozen = tensor_bytes(tmp_path / "half", "frozen.")
    print(f"knowledge={knowledge}: adapter bytes {half} of {full} unpruned = {half / full:.3f}; "
          f"frozen knowledge checkpoints {frozen} bytes")
    assert half <= 0.52 * full
    # The frozen residuals are reported as what they are: the pruned adapters' storage.
    assert frozen == (full - half if knowledge == "frozen" else 0)


@pytest.fixture
def saved(tmp_path, model_factory):
    model, _ = trained(model_factory, prune_ratio=0.5)
    pear.save(model, tmp_path / "ck", backbone=VIT)
    return tmp_path / "ck"


def test_other_backbone_weights_or_name_are_refused(saved, model_factory):
    other = model_factory("vit", seed=1)
    before = snapshot(other)
    with pytest.raises(PearError, match="fingerprint.*other weights"):
        pear.load(saved, other, backbone_name=VIT)
    assert_untouched(other, before)

    same = model_factory("vit")
    before = snapshot(same)
    with pytest.raises(PearError, match=f"trained on backbone '{VIT}', not 'deit_tiny_patch16_224'"):
        pear.load(saved, same, backbone_name="deit_tiny_patch16_224")
    assert_untouched(same, before)


def test_drifted_batchnorm_statistics_are_named_as_the_cause(tmp_path, model_factory):
    """A library user who trains a CNN in model.train() mode lets the frozen backbone's
    BatchNorm running statistics drift; loading onto the original backbone is refused
    (the saved model depended on them) with an error that says so, not "other weights"."""
    model = model_factory("lite0")
    pear.attach(model)
    x, y = batch("lite0")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()  # no freeze_norm_stats: the running statistics move
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    pear.save(model, tmp_path / "ckpt", backbone="tf_efficientnet_lite0")
    fresh = model_factory("lite0")
    before = snapshot(fresh)
    with pytest.raises(PearError, match="same parameters.*other buffers.*BatchNorm running statistics.*"
                                        "freeze_norm_stats"):
        pear.load(tmp_path / "ckpt", fresh)
    assert_untouched(fresh, before)


def _edit_json(ckpt, change, reseal=True):
    """Edit the JSON; `reseal` recomputes its field hashes (as a careful forger would), so
    the checks behind the seal are what refuses the edit."""
    info = json.loads((ckpt / CONFIG_FILE).read_text())
    change(info)
    (ckpt / CONFIG_FILE).write_text(json.dumps(pear.checkpoint.seal(info) if reseal else info))


def _rewrite_tensors(ckpt, change, declare=True):
    """Rewrite the tensor file through `change(tensors)` and record its hash (with
    `declare`, also its names and shapes) in the JSON, so only the content is wrong."""
    with safe_open(str(ckpt / TENSORS_FILE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(ckpt / TENSORS_FILE))

    def record(info):
        info["tensors_sha256"] = sha256_file(ckpt / TENSORS_FILE)
        if declare:
            info["tensors"] = {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in tensors.items()}
    _edit_json(ckpt, record)


def _drop_first_adapter_tensor(tensors):
    del tensors[next(k for k in tensors if k.startswith("adapters."))]


def _flip_byte(ckpt):
    data = bytearray((ckpt / TENSORS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (ckpt / TENSORS_FILE).write_bytes(bytes(data))


def _truncate(ckpt):
    data = (ckpt / TENSORS_FILE).read_bytes()
    (ckpt / TENSORS_FILE).write_bytes(data[: len(data) // 2])


def _halve_rank(tensors):
    """Adapters at rank 4 where the config says 8: a self-consistent file that does not fit."""
    for k, t in list(tensors.items()):
        if k.startswith("adapters.") and ".down." in k:
            tensors[k] = t[:4].clone()
        elif k.startswith("adapters.") and k.endswith("up.weight"):
            tensors[k] = t[:, :4].clone()


def _share_unknown(info):
    info["positions"][0]["source"] = "blocks.99.mlp"


CORRUPTIONS = {
    "tensor missing from the file": (lambda c: _rewrite_tensors(c, _drop_first_adapter_tensor, declare=False),
                                     "tensors do not match pear_config.json: missing"),
    "tensors of another shape": (lambda c: _rewrite_tensors(c, _halve_rank), "do not fit this backbone"),
    "truncated tensor file": (_truncate, "does not match the SHA-256"),
    "one byte edited": (_flip_byte, "does not match the SHA-256"),
    "JSON cut short": (lambda c: (c / CONFIG_FILE).write_text((c / CONFIG_FILE).read_text()[:-20]),
                       "is not valid UTF-8 JSON"),
    "JSON share map edited": (lambda c: _edit_json(c, _share_unknown), "is kept but its source is 'blocks.99.mlp'"),
    "JSON edited, not resealed": (lambda c: _edit_json(c, lambda i: i["positions"][0].update(importance=0.5),
                                                       reseal=False),
                                  r"was edited after it was saved \(changed 'positions'"),
    "unknown format_version": (lambda c: _edit_json(c, lambda i: i.update(format_version=99)),
                               "format_version 99 is not supported"),
    "tensor file missing": (lambda c: (c / TENSORS_FILE).unlink(), "has no adapters.safetensors"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_damaged_checkpoint_is_refused_and_backbone_untouched(saved, model_factory, case):
    corrupt, message = CORRUPTIONS[case]
    corrupt(saved)
    backbone = model_factory("vit")
    backbone.reset_classifier(7)
    before = snapshot(backbone)
    with pytest.raises(PearError, match=message) as err:
        pear.load(saved, backbone, backbone_name=VIT)
    print(f"{case}: {err.value}")
    assert str(saved) in str(err.value)
    assert_untouched(backbone, before)


# ---------------------------------------------------------------- atomicity

def _stop_at_line(k, fd):
    """At the k-th line executed by `atomic_dir_write` and the atomic.py helpers it
    calls directly (all but the caller's write callback, which only fills the temporary
    folder), tell the parent and wait to be killed."""
    import pear.atomic as ck

    seen = [0]
    writer = []

    def local(frame, event, arg):
        if event == "line":
            seen[0] += 1
            if seen[0] == k:
                os.write(fd, f"at {frame.f_code.co_name}:{frame.f_lineno}\n".encode())
                signal.pause()
        return local

    def on_call(frame, event, arg):
        code = frame.f_code
        if code is ck.atomic_dir_write.__code__:
            writer[:] = [frame]
            return local
        if (writer and frame.f_back is writer[0] and code.co_filename == ck.__file__
                and code is not frame.f_back.f_locals["write"].__code__):
            return local
        return None

    sys.settrace(on_call)


def _version(t, versions):
    return next(i for i, v in enumerate(versions) if v.keys() == t.keys() and all(torch.equal(v[k], t[k]) for k in v))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills forked writers")
def test_save_killed_at_any_point_leaves_a_complete_checkpoint(tmp_path, model_factory):
    """A writer is SIGKILLed at every line of the save in turn (from atomic_dir_write
    on); each time the checkpoint folder must hold the old or the new checkpoint,
    complete, and leftovers must be hidden folders nobody reads as a checkpoint."""
    old = model_factory("vit")
    pear.attach(old, PearConfig(rank=64, init="random"))
    new = model_factory("vit")
    pear.attach(new, PearConfig(rank=64, init="random"))
    with torch.no_grad():
        for p in pear.adapters.adapter_modules(new)["blocks.0.attn"].parameters():
            p.add_(1.0)
    fp = fingerprint(old)
    run = tmp_path / "run"
    dest = run / "checkpoint"
    versions = [pear.checkpoint.task_tensors(m) for m in (old, new)]
    print(f"checkpoint of {sum(_nbytes(t) for t in versions[0].values()):,} tensor bytes")
    backbone = model_factory("vit")  # pear.load leaves it untouched, so one serves every check
    seen, v = [], 1
    for k in itertools.count(1):
        if v == 1:
            pear.save(old, dest, backbone=VIT, fingerprint_value=fp)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer; no torch kernels run here, only file writes
            try:
                os.close(r)
                _stop_at_line(k, w)
                pear.save(new, dest, backbone=VIT, fingerprint_value=fp)
                sys.settrace(None)
                os.write(w, b"done\n")
            finally:
                os._exit(0)
        os.close(w)
        ready, _, _ = select.select([r], [], [], 60)
        msg = os.read(r, 200).decode().strip() if ready else "timeout"
        os.close(r)
        if msg != "done":
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert msg != "timeout" and msg, f"writer {k} neither stopped nor finished"

        assert dest.is_dir(), f"no checkpoint after the writer was killed {msg}"
        loaded = pear.load(dest, backbone, backbone_name=VIT)
        v = _version(pear.checkpoint.task_tensors(loaded), versions)
        assert sorted(p.name for p in dest.iterdir()) == sorted([CONFIG_FILE, TENSORS_FILE, "README.md"])  # + its card
        for leftover in run.iterdir():
            assert leftover.name == "checkpoint" or leftover.name.startswith("."), leftover
        seen.append((msg, v))
        if msg == "done":
            break
    print(f"killed the writer at {len(seen) - 1} points; checkpoint version after each: "
          f"{''.join(str(v) for _, v in seen)}")
    versions_seen = [v for _, v in seen]
    assert len(seen) > 5
    assert versions_seen == sorted(versions_seen) and versions_seen[0] == 0 and versions_seen[-1] == 1
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]  # a finished save cleans up


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_get_the_users_default_mode_not_a_private_temp_mode(tmp_path, model_factory, umask):
    from pear.atomic import atomic_write_text

    old = os.umask(umask)
    try:
        model = model_factory("vit")
        pear.attach(model)
        pear.save(model, tmp_path / "ckpt", backbone=VIT)
        pear.save(model, tmp_path / "ckpt", backbone=VIT)  # the replacing path too
        atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "ckpt") == 0o777 & ~umask
    for f in (tmp_path / "ckpt").iterdir():
        assert mode(f) == 0o666 & ~umask, f
    assert mode(tmp_path / "metrics.json") == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_fingerprints_in_one_pass_equal_the_two_separate_ones(model_factory):
    from pear.checkpoint import fingerprints

    model = model_factory("lite0")
    pear.attach(model)
    full, weights = fingerprints(model)
    assert (full, weights) == (fingerprint(model), fingerprint(model, buffers=False))
    assert full != weights  # BatchNorm buffers count in one and not the other


def test_the_checkpoint_parts_are_one_module_to_import_and_to_patch(monkeypatch, tmp_path):
    """pear.checkpoint re-exports every public name its parts define, and a name set there
    (as a test's monkeypatch does) is what the part's own code then calls."""
    import pear.checkpoint as C
    from pear import checkpoint_backbone, checkpoint_files, checkpoint_read

    for part in (checkpoint_files, checkpoint_backbone, checkpoint_read):
        defined = [n for n, v in vars(part).items()
                   if not n.startswith("_") and getattr(v, "__module__", None) == part.__name__]
        assert defined and all(getattr(C, n) is getattr(part, n) for n in defined), part.__name__
    written = []
    real = C.save_file
    monkeypatch.setattr(C, "save_file", lambda tensors, path, metadata=None: written.append(path) or
                        real(tensors, path, metadata=metadata))
    C.write_tensor_dir(tmp_path / "d", {"x": torch.zeros(2)}, {"format": "test", "format_version": 2})
    assert [os.path.basename(p) for p in written] == [C.TENSORS_FILE]
    monkeypatch.undo()
    assert checkpoint_files.save_file is real
    assert C.read_tensor_dir(tmp_path / "d", "test")[1]["x"].shape == (2,)
