"""`pear predict`: top-k classes for image files with a saved task checkpoint.

Images go through the training pipeline itself (`load_image` + `build_transform`), so
grey, RGBA, palette and 16-bit images of any size are converted exactly as the
training images were.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ...errors import PearError
from ..datasets.images import build_transform, load_image
from ..models.weights import pretrained_cfg
from ..run.batches import resolve_device
from .runs import rebuild


def image_files(images) -> list[Path]:
    """Files as given; folders expand to the image files directly inside them, sorted."""
    if isinstance(images, (str, Path)):
        images = [images]
    suffixes = set(Image.registered_extensions())
    out: list[Path] = []
    for item in images:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise PearError(f"folder {p} holds no image files (looked for {', '.join(sorted(suffixes)[:8])}, ...)")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise PearError(f"image {p} does not exist")
    if not out:
        raise PearError("no images given")
    return out


def predict(
    ckpt: str | Path,
    images,
    *,
    backbone: str | None = None,
    weights: str | None = None,
    top_k: int = 5,
    batch_size: int = 32,
    device: str = "auto",
) -> list[dict]:
    """Top-k predictions of the task checkpoint `ckpt` for each image (files, or
    folders of images). `weights` must be the backbone weights used in training (the
    checkpoint's fingerprint refuses others). Returns, per image, its path and a list
    of {index, class, probability}, most probable first."""
    for name, v in (("top_k", top_k), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PearError(f"{name} must be a positive integer, got {v!r}")
    dev = resolve_device(device)
    files = image_files(images)  # before the model is built: a typo should not wait for it
    model, info, data_cfg = rebuild(ckpt, backbone=backbone, weights=weights, device=dev)
    img_size = (info.get("meta") or {}).get("img_size") or pretrained_cfg(model)["input_size"][-1]
    transform = build_transform(img_size, data_cfg["mean"], data_cfg["std"])
    names = info.get("class_names")
    results = []
    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        x = torch.stack([load_image(f, transform) for f in chunk]).to(dev)
        with torch.inference_mode():
            probs = model(x).float().softmax(-1).cpu()
        values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        for f, vs, ix in zip(chunk, values.tolist(), indices.tolist()):
            results.append(
                {
                    "image": str(f),
                    "predictions": [
                        {"index": j, "class": names[j] if names and j < len(names) else f"class {j}", "probability": v}
                        for j, v in zip(ix, vs)
                    ],
                }
            )
    return results


def render_predictions(results: list[dict]) -> str:
    """One block per image: its path, then rank, probability and class name."""
    lines = []
    for r in results:
        lines.append(r["image"])
        lines += [f"  {k}. {p['probability'] * 100:6.2f}%  {p['class']}" for k, p in enumerate(r["predictions"], 1)]
    return "\n".join(lines)
