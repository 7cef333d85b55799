"""`pear inspect`: what a saved task pruned, who shares whom, and what it stores.

Works from the checkpoint files alone (no backbone is built), so it is instant even
for ViT-B checkpoints. The numbers are `pear.report`'s of the loaded model (both come from
`pear.report.summarize`), plus `checkpoint_file_bytes`, the size of the checkpoint's
files on disk.
"""

from __future__ import annotations

from pathlib import Path

from ...card import CARD_FILE
from ...config import SHARE_ALIASES
from ...errors import PearError
from ...jsontypes import checkpoint_problems, recorded_heads
from ...report import checkpoint_report, tensors_size
from ..outputs import PNG, write_output
from ..run.checkpoint_kinds import PEAR, SavedCheckpoint, open_checkpoint
from ..run.rundir import RunDir
from .runs import read_metrics

_KIND_COLOURS = {"attn": "#3b75af", "mlp": "#ef8636", "qkv": "#519e3e", "block": "#3b75af"}

# Files written before the rename store the matched share policy as 'rank'; users read today's name.
_PUBLIC_SHARE = SHARE_ALIASES


def inspect_path(path: str | Path, plot: str | Path | None = None) -> dict:
    """Describe a run folder (its `checkpoint/` plus metrics.json) or a checkpoint
    folder. Pear checkpoints: per position importance, kept / pruned, shared source
    and parameters, and the totals; plain (linear / full / lora) checkpoints: what
    they store. Every file is validated (hashes included) first. With `plot`, also
    write the pruning map PNG there."""
    path = Path(path)
    folder = RunDir(path)
    run = folder if folder.checkpoint.is_dir() else None
    if run is None and folder.is_run:
        raise PearError(f"run folder {path} has no {RunDir.CHECKPOINT}/ yet: the run has not finished")
    saved = open_checkpoint(run.checkpoint if run else path)
    info = _inspect_pear(saved) if saved.kind == PEAR else _inspect_plain(saved)
    info["path"] = str(path)
    info["metrics"] = read_metrics(run.metrics) if run and run.finished else None
    if plot is not None:
        if info["kind"] != PEAR:
            raise PearError(
                f"{saved.path} is a plain {info['method']!r} checkpoint: it has no adapter positions to plot"
            )
        plot_pruning_map(info, plot)
        info["plot"] = str(plot)
    return info


def _files(saved: SavedCheckpoint) -> dict[str, int]:
    return {n: (saved.path / n).stat().st_size for n in saved.files}


def _described(saved: SavedCheckpoint) -> dict:
    """What both kinds of checkpoint say about themselves."""
    info, kind = saved.info, saved.kind
    meta = info.get("meta") or {}
    return {
        "kind": kind,
        "checkpoint": str(saved.path),
        "method": info.get("method") or meta.get("method") or kind,
        "task": meta.get("task"),
        "backbone": info.get("backbone"),
        "num_classes": info.get("num_classes"),
        "class_names": info.get("class_names"),
    }


def _inspect_pear(saved: SavedCheckpoint) -> dict:
    assert saved.task is not None, "a Pear checkpoint is read with its TaskCheckpoint"
    rep = checkpoint_report(saved.task)
    files = _files(saved)  # the model card too, where there is one (checkpoints before 0.2 have none)
    # What a task costs to store and load: its tensors and config. The model card is listed
    # but not counted: it is documentation, and its size depends on paths in its command.
    rep["totals"]["checkpoint_file_bytes"] = sum(n for name, n in files.items() if name != CARD_FILE)
    return {**_described(saved), **rep, "files": files}


def _inspect_plain(saved: SavedCheckpoint) -> dict:
    info, tensors = saved.info, saved.tensors
    # read_checkpoint validates a Pear checkpoint's JSON; a plain one's fields shown here
    # are checked here (its JSON is not covered by the tensor file's hash, so a hand
    # edit must give a clear error, not a crash).
    problems = checkpoint_problems(info)
    if problems:
        raise PearError(f"{saved.json_file} is malformed: {'; '.join(problems)}")
    stored_params, stored = tensors_size(tensors, "")
    # 'head' names one head module, or a list of several (head, head_dist: a distilled DeiT).
    sizes = [tensors_size(tensors, f"{h}.") for h in recorded_heads(info)]
    head_params, head_bytes = sum(p for p, _ in sizes), sum(b for _, b in sizes)
    files = _files(saved)
    return {
        **_described(saved),
        "totals": {
            "tensors": len(tensors),
            "stored_params": stored_params,
            "head_params": head_params,
            "other_params": stored_params - head_params,
            "tensor_bytes": stored,
            "head_bytes": head_bytes,
            "checkpoint_file_bytes": sum(files.values()),
        },
        "files": files,
    }


# ---------------------------------------------------------------- text


def _short(name: str | None) -> str:
    """'blocks.3.mlp' -> 'b3.mlp' (plot labels have little room)."""
    return "b" + name.removeprefix("blocks.") if name and name.startswith("blocks.") else str(name)


def _num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _value(v) -> str:
    """A metrics.json value (hand-editable, so of any JSON type)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def _header(info: dict) -> list[str]:
    bb = info.get("backbone") or {}
    lines = [
        f"checkpoint  {info['checkpoint']}",
        f"method      {info['method']}" + (f"   task {info['task']}" if info.get("task") else ""),
        f"backbone    {bb.get('name') or '-'}   fingerprint {bb.get('fingerprint') or '-'}",
        f"classes     {_num(info.get('num_classes'))}",
    ]
    if info["kind"] == PEAR:
        c = info["config"]
        lines.append(
            f"pear        {c['adapter']} adapters, rank {c['rank']}, scale {c['scale']}, importance "
            f"{c['importance']}, prune ratio {c['prune_ratio']} ({c.get('prune_scope', 'global')}), share "
            f"{_PUBLIC_SHARE.get(c['share'], c['share'])}, knowledge "
            f"{c['knowledge']}"
        )
    return lines


def _pear_table(info: dict) -> list[str]:
    head = ("position", "kind", "importance", "state", "shares", "params", "frozen")
    cells = [
        (
            r["name"],
            r["kind"],
            "-" if r["importance"] is None else f"{r['importance']:.4g}",
            r["state"],
            r["shares"] or "-",
            _num(r["params"]),
            _num(r["frozen_params"]),
        )
        for r in info["positions"]
    ]
    widths = [max(len(str(row[i])) for row in [head, *cells]) for i in range(len(head))]
    right = {2, 5, 6}  # numeric columns

    def fmt(row) -> str:
        return "  ".join(
            str(v).rjust(w) if i in right else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths))
        ).rstrip()

    t = info["totals"]
    ratio = f" ({100 * t['adapter_ratio']:.1f}%)" if t["adapter_ratio"] is not None else ""
    return [
        fmt(head),
        fmt(["-" * w for w in widths]),
        *map(fmt, cells),
        "",
        f"positions         {t['positions']}: {t['pruned']} pruned, {t['shared']} of them shared",
        f"trainable params  {_num(t['trainable_params'])} (adapters {_num(t['adapter_params'])} + head "
        f"{_num(t['head_params'])}); {_num(t['trainable_params_before'])} before pruning",
        f"adapter bytes     {_num(t['adapter_bytes'])} of {_num(t['adapter_bytes_unpruned'])} unpruned{ratio}",
        f"frozen bytes      {_num(t['frozen_bytes'])} ({_num(t['frozen_params'])} params of knowledge checkpoints)",
        f"head bytes        {_num(t['head_bytes'])}",
    ]


def _plain_table(info: dict) -> list[str]:
    t = info["totals"]
    return [
        f"stored tensors    {t['tensors']}: {_num(t['stored_params'])} params (head {_num(t['head_params'])}, "
        f"other {_num(t['other_params'])}), {_num(t['tensor_bytes'])} bytes"
    ]


def render_table(info: dict) -> str:
    """`inspect_path`'s result as fixed-width text: a header, one row per position
    (Pear checkpoints) and the totals."""
    lines = _header(info) + [""]
    lines += _pear_table(info) if info["kind"] == PEAR else _plain_table(info)
    files = " + ".join(f"{n} {_num(s)}" for n, s in info["files"].items())
    lines.append(f"checkpoint files  {_num(info['totals']['checkpoint_file_bytes'])} bytes ({files})")
    if info.get("metrics"):
        m = info["metrics"]
        keys = ("test_acc", "trainable_params", "checkpoint_file_bytes", "epochs", "train_seconds")
        shown = {k: m[k] for k in keys if m.get(k) is not None}
        lines += ["", "metrics.json      " + "   ".join(f"{k} {_value(v)}" for k, v in shown.items())]
    if info.get("plot"):
        lines.append(f"plot              {info['plot']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plot


def _title(info: dict) -> str:
    t = info["totals"]
    what = " · ".join(str(x) for x in (info.get("task"), info["method"], (info.get("backbone") or {}).get("name")) if x)
    ratio = f" ({100 * t['adapter_ratio']:.1f}%)" if t["adapter_ratio"] is not None else ""
    return (
        f"{what}\n{t['pruned']} of {t['positions']} positions pruned, {t['shared']} shared, trainable "
        f"{t['trainable_params']:,} params\nadapter bytes {t['adapter_bytes']:,} of "
        f"{t['adapter_bytes_unpruned']:,} unpruned{ratio}"
    )


def plot_pruning_map(info: dict, path: str | Path) -> Path:
    """Bar chart of importance per block, one bar per sub-layer kind (attn / mlp for
    ViTs, one per block for CNNs). Pruned positions are hatched and grey-filled and
    labelled with the adapter they share ('<- b3.mlp', '+frozen' with a frozen knowledge
    checkpoint beside it), 'frozen only' or 'no adapter'. Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = info["positions"]
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    depths = sorted({r["depth"] for r in rows})
    x_of = {d: i for i, d in enumerate(depths)}
    scored = [r["importance"] for r in rows if r["importance"] is not None]
    top = max(scored, default=0.0) or 1.0

    fig = Figure(figsize=(max(8.0, 0.55 * len(depths) * len(kinds) + 2), 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _draw_bars(ax, rows, kinds, x_of, top)
    ax.set_xticks(range(len(depths)))
    cnn = kinds == ["block"]
    names = {r["depth"]: _short(r["name"]) for r in rows}
    ax.set_xticklabels(
        [names[d] for d in depths] if cnn else [str(d) for d in depths], rotation=90 if cnn else 0, fontsize=8
    )
    ax.set_xlabel("block (stage.index)" if cnn else "block")
    ax.set_ylabel("importance")
    # Room above the tallest bar for its rotated share label.
    ax.set_ylim(0, top * 1.45)
    ax.set_xlim(-0.6, len(depths) - 0.4)
    if not scored:
        ax.text(
            0.5,
            0.5,
            "no importance scores (this checkpoint was never pruned)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="#404040",
        )
    _legend(ax, kinds, pruned_any=info["totals"]["pruned"] > 0)
    ax.set_title(_title(info), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _save_png(fig, Path(path))


def _draw_bars(ax, rows: list[dict], kinds: list[str], x_of: dict[int, int], top: float) -> None:
    """One bar per position, grouped by block; a pruned one hatched and labelled with what it shares."""
    width = 0.8 / len(kinds)
    for r in rows:
        k = kinds.index(r["kind"])
        x = x_of[r["depth"]] + (k - (len(kinds) - 1) / 2) * width
        h = r["importance"] or 0.0
        colour = _KIND_COLOURS.get(r["kind"], "#7f7f7f")
        pruned = r["state"] == "pruned"
        ax.bar(
            x,
            h,
            width * 0.92,
            color="#d9d9d9" if pruned else colour,
            edgecolor=colour,
            hatch="///" if pruned else None,
            linewidth=1.2,
        )
        if pruned:
            label = _pruned_label(r)
            ax.text(x, h + 0.02 * top, label, rotation=90, ha="center", va="bottom", fontsize=8, color="#404040")


def _pruned_label(r: dict) -> str:
    """'<- b3.mlp' (+frozen), 'frozen only' or 'no adapter': what a pruned position keeps."""
    if r["shares"]:
        return f"<- {_short(r['shares'])}" + (" +frozen" if r["frozen_params"] else "")
    return "frozen only" if r["frozen_params"] else "no adapter"


def _legend(ax, kinds: list[str], *, pruned_any: bool) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=_KIND_COLOURS.get(k, "#7f7f7f"), label=f"{k}: kept" if pruned_any else k) for k in kinds]
    if pruned_any:
        handles.append(Patch(facecolor="#d9d9d9", edgecolor="#404040", hatch="///", label="pruned (<- shared adapter)"))
    ax.legend(handles=handles, loc="upper right", fontsize=8, ncol=len(handles))


def _save_png(fig, path: Path) -> Path:
    """Write the PNG under the rule for user-named files (`pear.harness.outputs`): never
    over a checkpoint or another file that is not a PNG, and atomically."""
    return write_output(path, lambda fh: fig.savefig(fh, format="png", dpi=120), PNG)
