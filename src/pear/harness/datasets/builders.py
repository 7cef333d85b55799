"""Write small real datasets into the VTAB-1k folder format, offline.

``build_dataset(name, out_root)`` produces ``<out_root>/<name>/`` with the four list
files, ``classes.txt`` and PNG images under ``images/<split>/``: 800 train800, 200
val200 (train800val200 lists both) and 2,000 test images, all 3-channel RGB, so every
built-in dataset loads through `pear.harness.datasets.vtab` exactly like a real VTAB task.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pear.atomic import atomic_dir_write, check_replaceable
from pear.errors import PearError
from pear.harness.datasets.vtab import read_at_most
from pear.harness.run.locks import waiting_for

BUILTIN_DATASETS = ("fashion_mnist", "sprites_loc", "sprites_ori")

N_TRAIN, N_VAL, N_TEST = 800, 200, 2000

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# The full Fashion-MNIST training images are 47 MB decompressed; the cap stops a gzip
# bomb or a wrong file from exhausting memory.
MAX_IDX_BYTES = 200 * 1024 * 1024
_IDX_MAGIC = {0x00000801: 1, 0x00000803: 3}  # unsigned-byte labels / images -> ndim
_GZIP_MAGIC = b"\x1f\x8b"

SPRITE_SIZE = 64
N_BINS = 16
# Supersampled drawing gives anti-aliased edges, so orientation differences of one
# 22.5-degree bin are visible even on the smallest sprites.
_SUPERSAMPLE = 4
_UNIT_PX = 12.0  # sprite half-extent in pixels at scale 1
_SCALE_RANGE = (0.5, 1.0)
# Keeps every shape, at any rotation and the largest scale, fully inside the frame.
_MARGIN_PX = 13.0
_SPRITE_SHAPES = ("square", "ellipse", "heart")


def _read_capped(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=fh) as gz:
                    data = read_at_most(gz, MAX_IDX_BYTES + 1)
            else:
                data = read_at_most(fh, MAX_IDX_BYTES + 1)
    except FileNotFoundError:
        raise PearError(f"IDX file {path} does not exist") from None
    except IsADirectoryError:
        raise PearError(f"IDX file {path} is a directory; expected an IDX file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise PearError(
            f"{path}: cannot read IDX file ({type(e).__name__}: {e}); expected an IDX file, optionally gzip-compressed"
        ) from None
    if len(data) > MAX_IDX_BYTES:
        raise PearError(f"{path}: IDX data is larger than {MAX_IDX_BYTES} bytes (decompressed); refusing to load it")
    return data


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (MNIST format), plain or gzip-compressed.

    Accepts magic 0x00000801 (1-D labels) and 0x00000803 (3-D images). The declared
    dimensions must account for exactly the bytes present, which is checked before any
    array is made, so a hostile header cannot trigger a large allocation.
    """
    path = Path(path)
    data = _read_capped(path)
    if len(data) < 4:
        raise PearError(f"{path}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _IDX_MAGIC:
        raise PearError(
            f"{path}: IDX magic 0x{magic:08x} is not supported; expected 0x00000801 (labels) or 0x00000803 (images)"
        )
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise PearError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    actual = len(data) - header
    if expected != actual:
        raise PearError(
            f"{path}: IDX header declares dims {dims} ({expected} bytes of data) "
            f"but the file holds {actual} bytes after the header" + (" (truncated?)" if actual < expected else "")
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _fashion_file(source: Path, stem: str) -> Path:
    for candidate in (source / f"{stem}.gz", source / stem):
        if candidate.is_file():
            return candidate
    raise PearError(
        f"Fashion-MNIST folder {source} has no {stem}.gz or {stem}; expected the "
        f"standard files {', '.join(_FASHION_FILES.values())} (gzipped or not)"
    )


def _load_fashion_split(source: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _fashion_file(source, _FASHION_FILES[f"{kind}_images"])
    labels_path = _fashion_file(source, _FASHION_FILES[f"{kind}_labels"])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise PearError(f"{images_path}: expected 3-D image data (magic 0x00000803), got {images.ndim}-D")
    if labels.ndim != 1:
        raise PearError(f"{labels_path}: expected 1-D label data (magic 0x00000801), got {labels.ndim}-D")
    if len(images) != len(labels):
        raise PearError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; expected equal counts"
        )
    bad = np.flatnonzero(labels >= len(FASHION_MNIST_CLASSES))
    if bad.size:
        raise PearError(
            f"{labels_path}: label {int(labels[bad[0]])} at index {int(bad[0])} is "
            f"out of range; expected 0..{len(FASHION_MNIST_CLASSES) - 1}"
        )
    return images, labels


def _balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices, interleaving shuffled classes, so any prefix is near class-balanced."""
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    depth = max(len(idx) for idx in per_class)
    rounds = [idx[r] for r in range(depth) for idx in per_class if r < len(idx)]
    return np.asarray(rounds, dtype=np.int64)


def _fashion_mnist(source: str | Path | None, seed: int):
    folder = FASHION_MNIST_DIR if source is None else Path(source)
    if not folder.is_dir():
        hint = (
            " (install the Debian package dataset-fashion-mnist, or pass the folder holding the IDX files)"
            if folder == FASHION_MNIST_DIR
            else ""
        )
        raise PearError(f"Fashion-MNIST folder {folder} does not exist{hint}")
    train_x, train_y = _load_fashion_split(folder, "train")
    test_x, test_y = _load_fashion_split(folder, "test")
    if len(train_x) < N_TRAIN + N_VAL or len(test_x) < N_TEST:
        raise PearError(
            f"Fashion-MNIST in {folder} has {len(train_x)} train / {len(test_x)} "
            f"test images; expected at least {N_TRAIN + N_VAL} / {N_TEST}"
        )
    rng = np.random.default_rng(seed)
    train_order = _balanced_order(train_y, rng)
    test_order = _balanced_order(test_y, rng)
    picks = {
        "train800": train_order[:N_TRAIN],
        "val200": train_order[N_TRAIN : N_TRAIN + N_VAL],
        "test": test_order[:N_TEST],
    }
    splits = {}
    for split, idx in picks.items():
        source_x, source_y = (test_x, test_y) if split == "test" else (train_x, train_y)
        # Shuffled so list files are not ordered by class (class-cycled batches).
        idx = rng.permutation(idx)
        rgb = np.repeat(source_x[idx][..., None], 3, axis=-1)
        splits[split] = (rgb, [int(v) for v in source_y[idx]])
    return splits, list(FASHION_MNIST_CLASSES)


def _shape_outline(shape: str) -> np.ndarray:
    """Polygon in unit coordinates, heading along +x, extent <= ~1."""
    if shape == "square":
        h = 0.75
        return np.array([[h, h], [-h, h], [-h, -h], [h, -h]])
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    if shape == "ellipse":
        return np.stack([np.cos(t), 0.5 * np.sin(t)], axis=1)
    # Classic heart curve (lobes up, tip down), turned so the tip points along -x and the
    # lobes along +x, then centred on its bounding box and scaled to unit half-extent.
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    pts = np.stack([y, -x], axis=1)
    pts -= (pts.max(axis=0) + pts.min(axis=0)) / 2
    return pts / np.abs(pts).max()


_OUTLINES = {s: _shape_outline(s) for s in _SPRITE_SHAPES}
# A black hole in the sprite on its heading axis: without it a square would look the
# same at 4 orientations and an ellipse at 2, so orientation labels would be
# unlearnable. The heart needs no help but gets a hole too, so the hole says nothing
# about the shape; it sits in the heart's body, since nearer the lobes it would merge
# with the cleft.
_MARKER_AT = {"square": 0.45, "ellipse": 0.45, "heart": -0.1}
_MARKER_RADIUS = 0.22


def _draw_sprite(shape: str, scale: float, cx: float, cy: float, theta: float) -> np.ndarray:
    ss = _SUPERSAMPLE
    size = SPRITE_SIZE * ss
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    unit = _UNIT_PX * scale * ss
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    # Image y grows downwards; flipping it makes theta counter-clockwise as seen.
    to_pixels = np.array([1.0, -1.0]) * unit

    def place(points: np.ndarray) -> np.ndarray:
        return points @ rot * to_pixels + np.array([cx, cy]) * ss

    draw.polygon([tuple(p) for p in place(_OUTLINES[shape]).tolist()], fill=255)
    mx, my = place(np.array([_MARKER_AT[shape], 0.0]))
    r = _MARKER_RADIUS * unit
    draw.ellipse([mx - r, my - r, mx + r, my + r], fill=0)
    grey = np.asarray(canvas.reduce(ss))
    return np.repeat(grey[:, :, None], 3, axis=2)


def _sprites(target: str, seed: int):
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_VAL + N_TEST
    shapes = rng.integers(0, len(_SPRITE_SHAPES), n)
    scales = rng.uniform(*_SCALE_RANGE, n)
    xs, ys = rng.random(n), rng.random(n)
    thetas = rng.uniform(0, 2 * np.pi, n)
    span = SPRITE_SIZE - 2 * _MARGIN_PX
    if target == "x":
        labels = np.minimum((xs * N_BINS).astype(int), N_BINS - 1)
        names = [f"x {i / N_BINS:.4f}-{(i + 1) / N_BINS:.4f}" for i in range(N_BINS)]
    else:
        labels = np.minimum((thetas / (2 * np.pi) * N_BINS).astype(int), N_BINS - 1)
        step = 360 / N_BINS
        names = [f"{i * step:g}-{(i + 1) * step:g} deg" for i in range(N_BINS)]

    def render(idx):
        for i in idx:
            yield _draw_sprite(
                _SPRITE_SHAPES[shapes[i]], scales[i], _MARGIN_PX + xs[i] * span, _MARGIN_PX + ys[i] * span, thetas[i]
            )

    bounds = {"train800": (0, N_TRAIN), "val200": (N_TRAIN, N_TRAIN + N_VAL), "test": (N_TRAIN + N_VAL, n)}
    splits = {split: (render(range(a, b)), [int(v) for v in labels[a:b]]) for split, (a, b) in bounds.items()}
    return splits, names


# What a built task folder holds (`_write_task`): only such a folder is ever replaced.
BUILT_FILES = ("images/", "classes.txt", "train800.txt", "val200.txt", "train800val200.txt", "test.txt")


def _write_task(folder: Path, splits, class_names: list[str]) -> None:
    lines: dict[str, list[str]] = {}  # split -> its list file's lines
    for split, (images, labels) in splits.items():
        (folder / "images" / split).mkdir(parents=True)
        lines[split] = []
        for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            rel = f"images/{split}/{i:06d}.png"
            Image.fromarray(pixels).save(folder / rel, format="PNG")
            lines[split].append(f"{rel} {label}\n")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, entries in lines.items():
        (folder / f"{split}.txt").write_text("".join(entries), encoding="utf-8")
    (folder / "classes.txt").write_text("".join(f"{c}\n" for c in class_names), encoding="utf-8")


def build_dataset(
    name: str,
    out_root: str | Path,
    seed: int = 0,
    source: str | Path | None = None,
    overwrite: bool = False,
    if_missing: bool = False,
) -> Path:
    """Write built-in dataset `name` to ``<out_root>/<name>/`` and return that folder.

    - ``fashion_mnist``: real Fashion-MNIST from the IDX files in `source` (default: the
      Debian package ``dataset-fashion-mnist``). train800 / val200 are a seeded,
      class-interleaved draw from the 60k training set (80 / 20 per class), test a
      seeded class-balanced 2,000 from the 10k test set. Grey is replicated to RGB.
    - ``sprites_loc`` / ``sprites_ori``: procedural dSprites-style 64x64 images, a
      white square, ellipse or heart on black with random scale (0.5-1), position and
      orientation. Both use the same images for a given seed (as VTAB's dsprites_loc
      and dsprites_ori share dSprites) and differ only in the label: 16 bins of x
      position, or 16 bins of orientation over [0, 2pi) counter-clockwise. Every sprite
      has a small black hole on its heading, which makes orientation well defined over
      the full turn for all three shapes (a plain square repeats every 90 degrees and an
      ellipse every 180, which would make most orientation labels unlearnable).

    The build happens in a temporary folder beside the destination and replaces it in one
    step at the end (`pear.atomic.atomic_dir_write`), so an interrupted build never leaves
    a half-written task folder, and the folder gets the mode the user's umask gives.
    An existing destination is refused unless `overwrite`; with `if_missing` it is returned
    as it is (`pear suite --build`, whose array tasks may all start the same build at once).
    One build per data root at a time: a second process waits for the first (an flock on
    the data root, `pear.harness.run.locks.waiting_for`), then finds its result.
    """
    if name not in BUILTIN_DATASETS:
        raise PearError(f"dataset {name!r} is not built in; expected one of {', '.join(BUILTIN_DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PearError(f"seed {seed!r} is invalid; expected a non-negative integer")
    if source is not None and name != "fashion_mnist":
        raise PearError(f"dataset {name!r} is generated and takes no source; got {source}")
    out_root = Path(out_root)
    dest = out_root / name
    if _check_destination(dest, overwrite, if_missing):
        return dest
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PearError(f"output root {out_root} is not a folder") from None
    except OSError as e:
        raise PearError(f"cannot create output root {out_root}: {e.strerror or e}") from None
    with waiting_for(out_root, "dataset build"):
        if _check_destination(dest, overwrite, if_missing):  # again: another build may have just finished it
            return dest
        _build(name, dest, seed, source)
    return dest


def _check_destination(dest: Path, overwrite: bool, if_missing: bool) -> bool:
    """True when `dest` exists and `if_missing` takes it as it is; a PearError when it exists and may not be
    replaced; False when the build goes ahead."""
    if dest.exists() and not overwrite:
        if if_missing:
            return True
        raise PearError(f"{dest} already exists; pass overwrite=True (or remove it) to rebuild")
    check_replaceable(dest, BUILT_FILES, "dataset Pear built")
    return False


def _build(name: str, dest: Path, seed: int, source: str | Path | None) -> None:
    if name == "fashion_mnist":
        splits, class_names = _fashion_mnist(source, seed)
    else:
        splits, class_names = _sprites("x" if name == "sprites_loc" else "theta", seed)

    atomic_dir_write(dest, lambda tmp: _write_task(tmp, splits, class_names))
