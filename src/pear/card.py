"""The model card (README.md) of a task checkpoint folder, as peft and the HuggingFace hub keep one.

Rendered from the checkpoint's own JSON (task, classes, base model, positions) plus what
only a training run knows (test accuracy, the command); nothing in it is read back.
"""

from __future__ import annotations

CARD_FILE = "README.md"
_BYTES_PER = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def _params(info: dict) -> tuple[int, int]:
    """(parameters, bytes) of the stored tensors, from the shapes the JSON declares."""
    n = b = 0
    for t in (info.get("tensors") or {}).values():
        count = 1
        for d in t.get("shape", []):
            count *= d
        n += count
        b += count * _BYTES_PER.get(t.get("dtype"), 4)
    return n, b


def render(
    info: dict, *, test_acc: float | None = None, command: str | None = None, file_bytes: int | None = None
) -> str:
    """Markdown for a checkpoint whose pear_config.json holds `info`."""
    meta, bb = info.get("meta") or {}, info.get("backbone") or {}
    names = info.get("class_names") or []
    params, tensor_bytes = _params(info)
    cfg = info.get("pear_config") or {}
    lines = [
        f"# Pear task: {meta.get('task') or 'untitled'}",
        "",
        "Adapters, head and pruning map for a frozen backbone, made with "
        "[Pear](https://arxiv.org/abs/2409.19733) (pruning and sharing adapters).",
        "",
        f"- Task: {meta.get('task') or 'not recorded'}" + (f" (method {meta['method']})" if meta.get("method") else ""),
        f"- Classes ({info.get('num_classes')}): "
        + (
            ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            if names
            else "not named"
        ),
        f"- Test accuracy: {f'{test_acc:.2f}%' if test_acc is not None else 'not measured'}",
        f"- Base model: `{bb.get('name') or 'not recorded'}`, weights "
        f"{bb.get('weights_source') or 'not recorded'}"
        + (f" (SHA-256 `{bb['weights_sha256']}`)" if bb.get("weights_sha256") else ""),
        f"- Stored parameters: {params:,} ({tensor_bytes:,} tensor bytes"
        + (f"; the folder's tensor file is {file_bytes:,} bytes" if file_bytes is not None else "")
        + ")",
        f"- Pear: adapter {cfg.get('adapter')}, rank {cfg.get('rank')}, prune ratio {cfg.get('prune_ratio')}, "
        f"share {cfg.get('share')}, knowledge {cfg.get('knowledge')}",
    ]
    if command:
        lines.append(f"- Made by: `{command}`")
    lines += ["", "## Pruning map", "", "| position | state | runs the adapter of | importance |", "|---|---|---|---|"]
    for p in info.get("positions") or []:
        state = "kept" if p.get("source") == p.get("name") else ("shared" if p.get("source") else "pruned")
        imp = p.get("importance")
        lines.append(
            f"| {p.get('name')} | {state}{' + frozen' if p.get('frozen') else ''} | "
            f"{p.get('source') or '-'} | {f'{imp:.4g}' if isinstance(imp, (int, float)) else '-'} |"
        )
    lines += [
        "",
        "## Use",
        "",
        "```",
        "import pear",
        'model = pear.from_pretrained("THIS_FOLDER")  # rebuilds the base model from the recorded weights',
        "```",
        "",
    ]
    return "\n".join(lines)
