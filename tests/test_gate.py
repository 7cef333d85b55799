"""PearConfig.gate (ours, not in the paper): a learned gate at each shared position.

gate='none' is plain sharing, exactly as before (no parameter, nothing new in any file);
'scalar' / 'channel' start at 1.0, so pruning changes no logit, then train, are stored in
the task checkpoint and counted as adapter parameters, reload, resume, fold into the
backbone, and take the flag / suite grammar generated from the field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import pear
from pear import PearConfig, PearError
from pear.adapters import gate_params
from pear.atomic import sha256_file
from pear.checkpoint import CONFIG_FILE, TENSORS_FILE, read_checkpoint, seal, task_tensors
from pear.cli import main
from pear.multitask import MultiTaskModel
from pear.report import checkpoint_report, report

GATED = ("scalar", "channel")
LEGACY_CONFIG = Path(__file__).parent / "fixtures" / "legacy_run" / "finished" / "checkpoint" / CONFIG_FILE


def _attached(model: nn.Module, gate: str, **cfg) -> nn.Module:
    """Attach adapters with random up projections (init='random'): a shared adapter's output,
    and so its gate's gradient, is non-zero from the first step."""
    torch.manual_seed(0)
    pear.attach(model, PearConfig(init="random", scale=0.5, prune_ratio=0.5, gate=gate, **cfg))
    return model


def _prune(model: nn.Module) -> pear.PrunePlan:
    scores = {n: float(i) for i, n in enumerate(pear.positions(model))}
    plan = pear.make_plan(scores, model.pear_state.config, model)
    pear.prune_and_share(model, plan)
    return plan


def _pruned(model_factory, kind: str, gate: str, **cfg) -> nn.Module:
    model = _attached(model_factory(kind), gate, **cfg)
    _prune(model)
    return model


def _shared(model: nn.Module) -> list[str]:
    return [n for n, s in pear.slots(model).items() if s.adapter is not None and s.info.source != n]


def _steps(model: nn.Module, optimizer, batch, steps: int) -> None:
    x, y = batch
    model.train()
    pear.freeze_norm_stats(model)  # a CNN's frozen BatchNorm statistics stay those of its backbone
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


# ---------------------------------------------------------------- the option

def test_default_is_none_and_config_files_stay_as_before():
    assert PearConfig().gate == "none"
    assert "gate" not in PearConfig().to_dict()  # pear_config.json and args.yaml: the fields they held before
    legacy = json.loads(LEGACY_CONFIG.read_text())["pear_config"]
    assert PearConfig.from_dict(legacy).gate == "none"
    assert set(PearConfig.from_dict(legacy).to_dict()) == set(legacy) | {"distill_steps"}
    for gate in GATED:
        d = PearConfig(gate=gate).to_dict()
        assert d["gate"] == gate and PearConfig.from_dict(json.loads(json.dumps(d))) == PearConfig(gate=gate)


@pytest.mark.parametrize("bad", ["vector", "", None, 1, "Scalar"])
def test_bad_gate_is_refused_naming_the_field_and_the_values(bad):
    with pytest.raises(PearError, match=r"PearConfig\.gate must be one of none, scalar, channel; got"):
        PearConfig(gate=bad)


def test_help_labels_the_option_as_ours():
    from dataclasses import fields

    help_text = next(f.metadata["help"] for f in fields(PearConfig) if f.name == "gate")
    assert help_text.startswith("Ours (not in the paper)")
    assert all(f"'{v}'" in help_text for v in ("none", "scalar", "channel"))


# ---------------------------------------------------------------- the model

def test_gate_none_is_plain_sharing_with_no_new_parameter(model_factory):
    model = _pruned(model_factory, "vit", "none")
    assert _shared(model) and gate_params(model) == {}
    assert not any("gate" in k for k in model.state_dict())
    assert not any(k.startswith("gates.") for k in task_tensors(model))
    x = torch.randn(2, 17, 48, generator=torch.Generator().manual_seed(3))
    for name in _shared(model):
        slot = pear.slots(model)[name]
        with torch.no_grad():
            assert torch.equal(slot(x), slot.base(x) + slot.adapter(x))  # bit for bit, as before the option


@pytest.mark.parametrize("kind", ["vit", "cnn"])
@pytest.mark.parametrize("gate", GATED)
def test_right_after_pruning_the_gated_model_computes_plain_sharing(model_factory, batch_factory, kind, gate):
    x, _ = batch_factory(kind)
    plain, gated = _pruned(model_factory, kind, "none").eval(), _pruned(model_factory, kind, gate).eval()
    shared = _shared(gated)
    assert shared and sorted(gate_params(gated)) == sorted(shared)  # kept positions have none
    for name, g in gate_params(gated).items():
        up = pear.slots(gated)[name].adapter.up
        width = up.out_features if isinstance(up, nn.Linear) else up.out_channels
        assert g.shape == (() if gate == "scalar" else (width,)) and g.requires_grad and bool((g == 1).all())
    with torch.no_grad():
        torch.testing.assert_close(gated(x), plain(x), rtol=0, atol=1e-6)
    assert gated.pear_state.config.gate == gate and pear.summary(gated).shared == len(shared)


@pytest.mark.parametrize("gate", GATED)
def test_gates_join_the_optimizer_made_before_pruning_and_train(model_factory, batch_factory, gate):
    from pear.harness.train import make_optimizer

    batch = batch_factory("vit")
    model = _attached(model_factory("vit"), gate)
    optimizer = make_optimizer(model, lr=1e-2, wd=1e-4)  # as the harness: decay and no-decay groups
    _steps(model, optimizer, batch, 2)  # the scoring window
    _prune(model)
    pear.prune_optimizer(optimizer, model)
    gates = gate_params(model)
    no_decay = next(g for g in optimizer.param_groups if g["weight_decay"] == 0.0)
    assert all(any(p is g for p in no_decay["params"]) for g in gates.values())
    pear.prune_optimizer(optimizer, model)  # a second call adds nothing twice
    assert sum(p is g for grp in optimizer.param_groups for p in grp["params"] for g in gates.values()) == len(gates)
    _steps(model, optimizer, batch, 3)
    assert all(not torch.equal(g, torch.ones_like(g)) for g in gates.values())


def test_a_single_group_optimizer_and_the_pruner_train_the_gates(model_factory, batch_factory):
    x, y = batch_factory("vit")
    model = _attached(model_factory("vit"), "channel")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    pruner = pear.Pruner(model, optimizer, prune_step=2)
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        pruner.step()
        optimizer.step()
    gates = gate_params(model)
    assert pruner.pruned and gates and all(any(p is g for p in optimizer.param_groups[0]["params"])
                                           for g in gates.values())
    assert all(not torch.equal(g, torch.ones_like(g)) for g in gates.values())


# ---------------------------------------------------------------- files

def _trained(model_factory, batch_factory, kind: str, gate: str, **cfg) -> nn.Module:
    model = _pruned(model_factory, kind, gate, **cfg)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    _steps(model, optimizer, batch_factory(kind), 3)
    return model.eval()


@pytest.mark.parametrize("kind,gate", [("vit", "scalar"), ("vit", "channel"), ("cnn", "channel")])
def test_save_and_load_reproduce_the_gated_logits(tmp_path, model_factory, batch_factory, kind, gate):
    x, _ = batch_factory(kind)
    model = _trained(model_factory, batch_factory, kind, gate)
    with torch.no_grad():
        want = model(x)
    pear.save(model, tmp_path / "ckpt")
    ckpt = read_checkpoint(tmp_path / "ckpt")
    assert sorted(k[len("gates."):] for k in ckpt.tensors if k.startswith("gates.")) == sorted(_shared(model))
    assert ckpt.config.gate == gate and json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())[
        "pear_config"]["gate"] == gate
    loaded = pear.load(tmp_path / "ckpt", model_factory(kind)).eval()
    assert {n: g.detach() for n, g in gate_params(loaded).items()}.keys() == gate_params(model).keys()
    assert all(torch.equal(gate_params(loaded)[n], g) and gate_params(loaded)[n].requires_grad
               for n, g in gate_params(model).items())
    many = MultiTaskModel(model_factory(kind))
    many.add_task("t", tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(loaded(x), want)
        assert torch.equal(pear.from_pretrained(tmp_path / "ckpt", model_factory(kind)).eval()(x), want)
        assert torch.equal(many.eval()(x), want)


def _rewrite(ckpt: Path, change) -> None:
    """Change the tensor file, then record its names, shapes and hash and reseal the JSON, so
    that only the gate tensors themselves are wrong."""
    with safe_open(str(ckpt / TENSORS_FILE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(ckpt / TENSORS_FILE))
    info = json.loads((ckpt / CONFIG_FILE).read_text())
    info["tensors_sha256"] = sha256_file(ckpt / TENSORS_FILE)
    info["tensors"] = {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in tensors.items()}
    (ckpt / CONFIG_FILE).write_text(json.dumps(seal(info)))


def _drop_a_gate(t):
    del t[next(k for k in t if k.startswith("gates."))]


def _gate_a_kept_position(t):
    t["gates.blocks.2.mlp"] = torch.ones(())


def _widen_a_gate(t):
    key = next(k for k in t if k.startswith("gates."))
    t[key] = torch.ones(t[key].shape[0] + 1)


@pytest.mark.parametrize("change,message", [
    (_drop_a_gate, r"do not match PearConfig\.gate='channel'.*missing \['gates\."),
    (_gate_a_kept_position, r"unexpected \['gates\.blocks\.2\.mlp'\]"),
    (_widen_a_gate, r"tensor 'gates\.[a-z0-9.]+' has shape \[49\], but a 'channel' gate on this adapter has "
                    r"shape \[48\]"),
])
def test_wrong_gate_tensors_are_refused(tmp_path, model_factory, batch_factory, change, message):
    model = _trained(model_factory, batch_factory, "vit", "channel")
    assert "blocks.2.mlp" not in _shared(model)
    pear.save(model, tmp_path / "ckpt")
    _rewrite(tmp_path / "ckpt", change)
    with pytest.raises(PearError, match=message):
        pear.load(tmp_path / "ckpt", model_factory("vit"))


@pytest.mark.parametrize("gate", GATED)
def test_gates_are_counted_as_adapter_parameters_and_stored_bytes(tmp_path, model_factory, batch_factory, gate):
    plain = _trained(model_factory, batch_factory, "vit", "none")
    gated = _trained(model_factory, batch_factory, "vit", gate)
    n_gate = sum(g.numel() for g in gate_params(gated).values())
    assert n_gate == len(_shared(gated)) * (1 if gate == "scalar" else 48)
    assert pear.summary(gated).adapter_params == pear.summary(plain).adapter_params + n_gate
    live, base = report(gated)["totals"], report(plain)["totals"]
    assert live["adapter_params"] == base["adapter_params"] + n_gate
    assert live["adapter_bytes"] == base["adapter_bytes"] + 4 * n_gate
    assert live["stored_tensor_bytes"] == base["stored_tensor_bytes"] + 4 * n_gate
    assert live["trainable_params"] == base["trainable_params"] + n_gate
    rows = {r["name"]: r for r in report(gated)["positions"]}
    assert all(rows[n]["params"] == gate_params(gated)[n].numel() for n in _shared(gated))
    pear.save(gated, tmp_path / "ckpt")
    stored = checkpoint_report(read_checkpoint(tmp_path / "ckpt"))["totals"]
    assert {k: stored[k] for k in ("adapter_params", "adapter_bytes", "stored_tensor_bytes")} == \
        {k: live[k] for k in ("adapter_params", "adapter_bytes", "stored_tensor_bytes")}
    tensors = read_checkpoint(tmp_path / "ckpt").tensors
    assert stored["stored_tensor_bytes"] == sum(t.numel() * t.element_size() for t in tensors.values()) + \
        stored["share_map_bytes"]


def test_resumed_state_restores_the_gates_and_their_optimizer_state(tmp_path, model_factory, batch_factory):
    from pear.harness.state import load_state, save_state
    from pear.harness.train import make_optimizer

    batch = batch_factory("vit")
    model = _attached(model_factory("vit"), "scalar")
    optimizer = make_optimizer(model, lr=1e-2, wd=1e-4)
    plan = _prune(model)
    pear.prune_optimizer(optimizer, model)
    _steps(model, optimizer, batch, 2)
    save_state(tmp_path / "state", model, optimizer, None, epoch=1, step=2, history=[], plan=plan, best=None)
    again = _attached(model_factory("vit"), "scalar")
    opt_again = make_optimizer(again, lr=1e-2, wd=1e-4)
    load_state(tmp_path / "state", again, opt_again, None, torch.device("cpu"))
    assert all(torch.equal(gate_params(again)[n], g) for n, g in gate_params(model).items())
    _steps(model, optimizer, batch, 1)
    _steps(again, opt_again, batch, 1)  # the same step: Adam's moments of the gates came back too
    assert all(torch.equal(gate_params(again)[n], g) for n, g in gate_params(model).items())


@pytest.mark.parametrize("gate", GATED)
def test_merge_and_unload_folds_the_gates(model_factory, batch_factory, gate):
    x, _ = batch_factory("vit")
    model = _pruned(model_factory, "vit", gate, adapter="lora")
    with torch.no_grad():
        for g in gate_params(model).values():
            g.copy_(torch.rand(g.shape, generator=torch.Generator().manual_seed(5)) * 2 - 0.5)
        before = model.eval()(x)
        after = pear.merge_and_unload(model)(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the harness: same-run rule, grammar, CLI

def test_a_run_recorded_before_the_option_is_the_same_run_at_gate_none(tiny_vtab):
    from pear.harness.options import TrainConfig, changed_options

    cfg = TrainConfig(data=str(tiny_vtab), task="toy", out="o")
    recorded = cfg.to_dict()
    assert "gate" not in recorded["pear"]  # args.yaml as before
    assert changed_options(recorded, cfg) == {}
    gated = TrainConfig(data=str(tiny_vtab), task="toy", out="o", pear=PearConfig(gate="scalar"))
    assert changed_options(recorded, gated) == {"gate": ("none", "scalar", None)}
    assert changed_options(gated.to_dict(), cfg) == {"gate": ("scalar", "none", None)}


def test_suite_grammar_takes_the_gate():
    from pear.harness.options import TrainConfig
    from pear.harness.suite_methods import method_overrides

    overrides = method_overrides("pear@scale=1@prune_ratio=0.75@gate=scalar")
    assert overrides == {"method": "pear", "scale": 1.0, "prune_ratio": 0.75, "gate": "scalar"}
    assert TrainConfig.from_dict({"data": "d", "task": "t", "out": "o", **overrides}).pear_config().gate == "scalar"
    with pytest.raises(PearError, match="--gate must be one of none, scalar, channel; got 'vector'"):
        TrainConfig.from_dict({"data": "d", "task": "t", "out": "o", **method_overrides("pear@gate=vector")})


def _train(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def test_pear_train_with_gate_scalar(tiny_vtab, tiny_vit_args, tmp_path, capsys):
    from pear.harness.options import TrainConfig
    from pear.harness.rundir import check_same_run

    run = tmp_path / "run"
    base = ["train", "--data", tiny_vtab, "--task", "toy", *tiny_vit_args, "--epochs", "2", "--batch-size", "16",
            "--workers", "0", "--no-progress", "--device", "cpu"]
    rc, err = _train([*base, "--out", run, "--gate", "scalar"], capsys)
    assert rc == 0, err
    recorded = yaml.safe_load((run / "args.yaml").read_text())
    assert recorded["pear"]["gate"] == "scalar"
    ckpt = read_checkpoint(run / "checkpoint")
    gates = {k: t for k, t in ckpt.tensors.items() if k.startswith("gates.")}
    shared = [p["name"] for p in ckpt.info["positions"] if p["source"] not in (None, p["name"])]
    assert shared and sorted(gates) == sorted("gates." + n for n in shared)
    assert all(t.shape == () for t in gates.values()) and any(float(t) != 1.0 for t in gates.values())  # trained
    totals = json.loads((run / "report.json").read_text())["totals"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["adapter_params"] == totals["adapter_params"] == checkpoint_report(ckpt)["totals"]["adapter_params"]
    rc, err = _train(["eval", "--run", run, "--device", "cpu"], capsys)
    assert rc == 0, err
    check_same_run(run, TrainConfig.from_dict(recorded))
    with pytest.raises(PearError, match=r"--gate 'none' \(the run has 'scalar'\)"):
        check_same_run(run, TrainConfig.from_dict({**recorded, "pear": {**recorded["pear"], "gate": "none"}}))
    rc, err = _train([*base, "--out", tmp_path / "bad", "--gate", "vector"], capsys)
    assert rc == 2 and "--gate must be one of none, scalar, channel; got 'vector'" in err
