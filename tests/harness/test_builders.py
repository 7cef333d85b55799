"""Built-in dataset builders and the hostile-input-safe IDX reader."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pear.errors import PearError
from pear.harness import builders
from pear.harness.builders import BUILTIN_DATASETS, FASHION_MNIST_DIR, build_dataset, read_idx
from pear.harness.data import VtabDataset, build_transform, read_list, task_info

COUNTS = {"train800": 800, "val200": 200, "train800val200": 1000, "test": 2000}


def idx_bytes(array: np.ndarray) -> bytes:
    magic = {1: 0x801, 3: 0x803}[array.ndim]
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sprites(tmp_path_factory):
    out = tmp_path_factory.mktemp("sprites")
    return {
        "loc": build_dataset("sprites_loc", out / "a"),
        "loc_again": build_dataset("sprites_loc", out / "b"),
        "ori": build_dataset("sprites_ori", out / "a"),
    }


def test_sprites_reproducible(sprites):
    first, again = folder_bytes(sprites["loc"]), folder_bytes(sprites["loc_again"])
    assert first == again
    assert len([k for k in first if k.endswith(".png")]) == 3000


def test_sprites_loc_and_ori_share_images_not_labels(sprites):
    loc, ori = sprites["loc"], sprites["ori"]
    for rel in ("images/train800/000000.png", "images/test/001999.png"):
        assert (loc / rel).read_bytes() == (ori / rel).read_bytes()
    assert (loc / "test.txt").read_text() != (ori / "test.txt").read_text()


@pytest.mark.parametrize("kind", ["loc", "ori"])
def test_sprites_counts_labels_and_images(sprites, kind):
    folder = sprites[kind]
    info = task_info(folder.parent, folder.name)
    assert info.num_classes == 16 and len(info.class_names) == 16
    for split, count in COUNTS.items():
        labels = [label for _, label in read_list(folder / f"{split}.txt", folder, 16)]
        assert len(labels) == count
        if split == "test":
            assert set(labels) == set(range(16))
    with Image.open(folder / "images/test/000000.png") as img:
        assert img.mode == "RGB" and img.size == (64, 64)
        pixels = np.asarray(img)
    assert pixels.min() == 0 and pixels.max() == 255  # white sprite on black


def test_sprites_loc_label_follows_x_position(sprites):
    folder = sprites["loc"]
    for rel_path, label in read_list(folder / "val200.txt", folder, 16)[:50]:
        grey = np.asarray(Image.open(rel_path))[:, :, 0].astype(float)
        cx = (grey.sum(axis=0) * np.arange(64)).sum() / grey.sum()
        span = 64 - 2 * builders._MARGIN_PX
        assert abs((cx - builders._MARGIN_PX) / span * 16 - (label + 0.5)) < 2.5


def test_sprites_seed_changes_output(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "N_TRAIN", 4)
    monkeypatch.setattr(builders, "N_VAL", 2)
    monkeypatch.setattr(builders, "N_TEST", 3)
    a = build_dataset("sprites_ori", tmp_path / "a", seed=0)
    b = build_dataset("sprites_ori", tmp_path / "b", seed=1)
    c = build_dataset("sprites_ori", tmp_path / "c", seed=1)
    assert folder_bytes(a) != folder_bytes(b) == folder_bytes(c)


def write_fashion_folder(folder: Path, n_train=1000, n_test=2000, gz=True, side=6) -> None:
    """Tiny IDX files whose pixel values encode the label (value = 20 * label + 5)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for kind, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.repeat((20 * labels + 5)[:, None, None], side, axis=1).repeat(side, axis=2)
        for stem, array in ((f"{kind}-images-idx3-ubyte", images), (f"{kind}-labels-idx1-ubyte", labels)):
            payload = idx_bytes(array)
            # Mixed compression: the builder must accept either per file.
            if gz and kind == "train":
                (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / stem).write_bytes(payload)


def test_fashion_mnist_from_own_idx_files(tmp_path):
    write_fashion_folder(tmp_path / "src")
    folder = build_dataset("fashion_mnist", tmp_path / "out", seed=3, source=tmp_path / "src")
    info = task_info(folder.parent, "fashion_mnist")
    assert info.num_classes == 10 and info.class_names[0] == "T-shirt/top"
    assert info.class_names[-1] == "Ankle boot"
    for split, count in COUNTS.items():
        items = read_list(folder / f"{split}.txt", folder, 10)
        assert len(items) == count
    train = read_list(folder / "train800.txt", folder, 10)
    per_class = np.bincount([label for _, label in train], minlength=10)
    assert per_class.min() >= 60  # roughly balanced draw
    for path, label in train[:100] + read_list(folder / "test.txt", folder, 10)[:100]:
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (6, 6, 3) and (pixels == 20 * label + 5).all()
    again = build_dataset("fashion_mnist", tmp_path / "again", seed=3, source=tmp_path / "src")
    assert folder_bytes(again) == folder_bytes(folder)
    ds = VtabDataset(folder.parent, "fashion_mnist", "val200", build_transform(8, [0.5] * 3, [0.5] * 3))
    assert ds[0][0].shape == (3, 8, 8)


def test_fashion_mnist_source_errors(tmp_path):
    with pytest.raises(PearError, match="does not exist"):
        build_dataset("fashion_mnist", tmp_path / "out", source=tmp_path / "nowhere")
    write_fashion_folder(tmp_path / "few", n_train=50, n_test=20, gz=False)
    with pytest.raises(PearError, match="50 train / 20 test"):
        build_dataset("fashion_mnist", tmp_path / "out", source=tmp_path / "few")
    (tmp_path / "few" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(PearError, match="t10k-labels-idx1-ubyte"):
        build_dataset("fashion_mnist", tmp_path / "out", source=tmp_path / "few")
    bad = tmp_path / "bad"
    write_fashion_folder(bad, n_train=10, n_test=10, gz=False)
    (bad / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(10, 12, np.uint8)))
    with pytest.raises(PearError, match="label 12"):
        build_dataset("fashion_mnist", tmp_path / "out", source=bad)
    (bad / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(9, np.uint8)))
    with pytest.raises(PearError, match="10 images but .* 9 labels"):
        build_dataset("fashion_mnist", tmp_path / "out", source=bad)
    assert not (tmp_path / "out" / "fashion_mnist").exists()


def test_fashion_mnist_debian_package(tmp_path):
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"{FASHION_MNIST_DIR} absent (apt-get install dataset-fashion-mnist)")
    folder = build_dataset("fashion_mnist", tmp_path)
    assert len(read_list(folder / "test.txt", folder, 10)) == 2000
    with Image.open(folder / "images/train800/000000.png") as img:
        assert img.size == (28, 28) and img.mode == "RGB"


def test_build_dataset_argument_errors(tmp_path):
    with pytest.raises(PearError) as err:
        build_dataset("mnist", tmp_path)
    assert all(name in str(err.value) for name in BUILTIN_DATASETS)
    with pytest.raises(PearError, match="takes no source"):
        build_dataset("sprites_loc", tmp_path, source=tmp_path)
    with pytest.raises(PearError, match="seed"):
        build_dataset("sprites_loc", tmp_path, seed=-1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(PearError, match="not a folder"):
        build_dataset("sprites_loc", tmp_path / "file")


@pytest.fixture
def small_builds(monkeypatch):
    monkeypatch.setattr(builders, "N_TRAIN", 3)
    monkeypatch.setattr(builders, "N_VAL", 2)
    monkeypatch.setattr(builders, "N_TEST", 2)


def test_existing_destination_needs_overwrite(tmp_path, small_builds):
    first = build_dataset("sprites_loc", tmp_path, seed=0)
    with pytest.raises(PearError, match="already exists"):
        build_dataset("sprites_loc", tmp_path, seed=1)
    (first / "notes.txt").write_text("the user's")  # a folder holding files it did not build is never replaced
    with pytest.raises(PearError, match=r"holds files Pear did not write there \(notes.txt\)"):
        build_dataset("sprites_loc", tmp_path, seed=1, overwrite=True)
    assert (first / "notes.txt").read_text() == "the user's"
    (first / "notes.txt").unlink()
    assert build_dataset("sprites_loc", tmp_path, seed=1, overwrite=True) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sprites_loc"]


def test_crash_leaves_no_partial_dataset(tmp_path, small_builds, monkeypatch):
    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", explode)
        with pytest.raises(KeyboardInterrupt):
            build_dataset("sprites_ori", tmp_path)
    assert list(tmp_path.iterdir()) == []

    old = build_dataset("sprites_ori", tmp_path, seed=0)
    before = folder_bytes(old)
    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", explode)
        with pytest.raises(KeyboardInterrupt):
            build_dataset("sprites_ori", tmp_path, seed=5, overwrite=True)
    assert folder_bytes(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sprites_ori"]


def test_read_idx_roundtrip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "plain").write_bytes(idx_bytes(images))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "labels").write_bytes(idx_bytes(np.array([3, 1, 4], np.uint8)))
    assert np.array_equal(read_idx(tmp_path / "plain"), images)
    assert np.array_equal(read_idx(tmp_path / "packed.gz"), images)
    assert read_idx(tmp_path / "labels").tolist() == [3, 1, 4]


HEADER3 = struct.pack(">4I", 0x803, 2, 3, 4)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "payload, needle",
    [
        (b"", "too short"),
        (b"\x00\x00\x08", "too short"),
        (struct.pack(">I", 0x0D0C0B0A) + bytes(20), "magic 0x0d0c0b0a"),
        (struct.pack(">I", 0x0D03) + bytes(20), "magic 0x00000d03"),  # not unsigned bytes
        (HEADER3[:10], "truncated IDX header"),
        (HEADER3 + bytes(23), "(truncated?)"),
        (HEADER3 + bytes(25), "holds 25 bytes"),
        (struct.pack(">4I", 0x803, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + bytes(8), "truncated"),
        (struct.pack(">2I", 0x801, 2**31) + b"\x01", "truncated"),
        (gzip.compress(HEADER3 + bytes(24))[:-12], "cannot read IDX"),
        (b"\x1f\x8b" + bytes(40), "cannot read IDX"),
    ],
)
def test_read_idx_hostile(tmp_path, payload, needle):
    path = tmp_path / "evil-idx"
    path.write_bytes(payload)
    with pytest.raises(PearError) as err:
        read_idx(path)
    assert str(path) in str(err.value) and needle in str(err.value)


@pytest.mark.timeout(10)
def test_read_idx_caps_decompressed_size(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "MAX_IDX_BYTES", 1000)
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(struct.pack(">2I", 0x801, 5000) + bytes(5000)))
    with pytest.raises(PearError, match="larger than 1000 bytes"):
        read_idx(bomb)
    with pytest.raises(PearError, match="does not exist"):
        read_idx(tmp_path / "missing")
    with pytest.raises(PearError, match="is a directory"):
        read_idx(tmp_path)


@settings(max_examples=50, deadline=None)
@given(payload=st.one_of(
    st.binary(max_size=200),
    # A valid magic gets the fuzzer past the first check into the dimension parsing.
    st.tuples(st.sampled_from([0x801, 0x803]), st.binary(max_size=64)).map(
        lambda t: struct.pack(">I", t[0]) + t[1]),
    st.binary(max_size=100).map(gzip.compress),
))
def test_fuzz_read_idx(tmp_path_factory, payload):
    path = tmp_path_factory.getbasetemp() / "fuzz-idx"
    path.write_bytes(payload)
    try:
        array = read_idx(path)
    except PearError:
        return
    assert array.dtype == np.uint8 and array.ndim in (1, 3)


def _racing_build(monkeypatch, name: str, root: Path):
    """Start building `name` into `root` in a thread that pauses half-way through writing its temporary
    folder; returns (the thread, the list its error lands in) once it is half-way."""
    import threading
    import time

    halfway, errors = threading.Event(), []
    write = builders._write_task

    def slow(folder, splits, class_names):
        (folder / "images").mkdir()
        halfway.set()
        time.sleep(0.5)  # meanwhile a second build starts
        (folder / "images").rmdir()
        write(folder, splits, class_names)

    monkeypatch.setattr(builders, "_write_task", slow)

    def first():
        try:
            build_dataset(name, root)
        except Exception as exc:  # noqa: BLE001 - the test reports whatever the first build met
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert halfway.wait(10)
    monkeypatch.setattr(builders, "_write_task", write)
    return thread, errors


def test_a_second_build_waits_for_the_first_and_is_refused_cleanly(tmp_path, small_builds, monkeypatch):
    thread, errors = _racing_build(monkeypatch, "sprites_loc", tmp_path)
    with pytest.raises(PearError, match="already exists"):
        build_dataset("sprites_loc", tmp_path)
    thread.join()
    assert errors == []
    assert task_info(tmp_path, "sprites_loc").num_classes == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sprites_loc"]


def test_a_build_if_missing_takes_the_result_of_a_build_under_way(tmp_path, small_builds, monkeypatch):
    """`pear suite --index I --build` of every array task at once: one builds, the others use it."""
    thread, errors = _racing_build(monkeypatch, "sprites_ori", tmp_path)
    assert build_dataset("sprites_ori", tmp_path, if_missing=True) == tmp_path / "sprites_ori"
    thread.join()
    assert errors == []
    assert len((tmp_path / "sprites_ori" / "train800.txt").read_text().splitlines()) == 3
