"""VTAB folder-format loading: the happy path, and every malformed input as a PearError."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pear.errors import PearError
from pear.harness import data
from pear.harness.data import (
    SPLITS,
    VTAB_GROUPS,
    VTAB_TASKS,
    VtabDataset,
    build_transform,
    load_image,
    read_list,
    task_info,
)

TF = build_transform(16, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


def write_png(path: Path, value: int = 128, mode: str = "RGB", size=(12, 9)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode != "RGB" else (value,) * 3).save(path)
    return path


def make_task(root: Path, name: str = "mytask", labels=None, classes=None) -> Path:
    """A complete small task folder: 6 train, 2 val, 4 test images."""
    labels = labels or {"train800": [0, 1, 2, 0, 1, 2], "val200": [1, 2], "test": [2, 1, 0, 0]}
    task = root / name
    lines = {}
    for split, split_labels in labels.items():
        lines[split] = []
        for i, label in enumerate(split_labels):
            rel = f"images/{split}/{i:06d}.png"
            write_png(task / rel, value=40 * label)
            lines[split].append(f"{rel} {label}\n")
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, entries in lines.items():
        (task / f"{split}.txt").write_text("".join(entries))
    if classes is not None:
        (task / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    return task


def list_file(task: Path, text, name="custom.txt") -> Path:
    path = task / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.fixture
def task(tmp_path):
    return make_task(tmp_path)


def test_vtab_tables():
    assert len(VTAB_TASKS) == 19
    assert [len(v) for v in VTAB_GROUPS.values()] == [7, 4, 8]
    assert sum(VTAB_GROUPS.values(), []) == list(VTAB_TASKS)
    assert VTAB_TASKS["sun397"] == 397 and VTAB_TASKS["smallnorb_ele"] == 9
    assert set(data.TASK_ALIASES.values()) <= set(VTAB_TASKS)


def test_loads_every_split(task):
    sizes = {"train800": 6, "val200": 2, "train800val200": 8, "test": 4}
    for split in SPLITS:
        ds = VtabDataset(task.parent, "mytask", split, TF)
        assert len(ds) == sizes[split]
        assert ds.num_classes == 3
    ds = VtabDataset(task.parent, "mytask", "test", TF)
    assert [label for _, label in ds.samples] == [2, 1, 0, 0]
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 2
    # value 80 normalised with mean = std = 0.5
    assert torch.allclose(x, torch.full_like(x, 80 / 255 * 2 - 1), atol=1e-4)


def test_read_list_skips_blank_lines_and_accepts_crlf(task):
    path = list_file(task, "\n  \nimages/test/000000.png\t1\r\n\n images/test/000001.png  0 \n")
    items = read_list(path, task, 3)
    assert items == [((task / "images/test/000000.png").resolve(), 1),
                     ((task / "images/test/000001.png").resolve(), 0)]


@pytest.mark.parametrize(
    "text, needles",
    [
        (b"images/test/000000.png 1\n\xff\xfe 2\n", [":2:", "UTF-8"]),
        ("images/test/000000.png\n", [":1:", "1 field"]),
        ("images/test/000000.png 1 extra\n", [":1:", "3 field"]),
        ("images/test/000000.png 1\nimages/test/000001.png one\n", [":2:", "'one'", "not an integer"]),
        ("images/test/000000.png 1.0\n", [":1:", "'1.0'"]),
        ("images/test/000000.png +1\n", [":1:", "'+1'"]),
        ("images/test/000000.png 3\n", [":1:", "label 3", "[0, 3)"]),
        ("images/test/000000.png -1\n", [":1:", "label -1", "[0, 3)"]),
        ("images/test/000000.png " + "9" * 5000 + "\n", [":1:", "out of range"]),
        ("/etc/hostname 0\n", [":1:", "'/etc/hostname'", "absolute"]),
        ("../../etc/passwd 0\n", [":1:", "'../../etc/passwd'", "outside the task folder"]),
        ("images/../../x.png 0\n", [":1:", "outside the task folder"]),
        ("images/test/nope.png 0\n", [":1:", "images/test/nope.png", "does not exist"]),
        ("images/test 0\n", [":1:", "not a file"]),
        ("\n\n  \n", ["no entries"]),
    ],
)
def test_read_list_rejects(task, text, needles):
    path = list_file(task, text)
    with pytest.raises(PearError) as err:
        read_list(path, task, 3)
    message = str(err.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_read_list_rejects_symlink_escapes(task, tmp_path):
    outside = write_png(tmp_path / "outside" / "secret.png")
    (task / "images" / "link.png").symlink_to(outside)
    (task / "images" / "linkdir").symlink_to(outside.parent, target_is_directory=True)
    for rel in ("images/link.png", "images/linkdir/secret.png"):
        path = list_file(task, f"{rel} 0\n")
        with pytest.raises(PearError, match="outside the task folder") as err:
            read_list(path, task, 3)
        assert f"{path}:1" in str(err.value) and rel in str(err.value)


def test_read_list_symlink_loop(task):
    (task / "images" / "loop").symlink_to("loop")
    path = list_file(task, "images/loop 0\n")
    with pytest.raises(PearError, match=r"custom\.txt:1"):
        read_list(path, task, 3)


def test_read_list_allows_symlinks_inside_task(task):
    (task / "images" / "alias.png").symlink_to(task / "images/test/000000.png")
    items = read_list(list_file(task, "images/alias.png 2\n"), task, 3)
    assert items == [((task / "images/test/000000.png").resolve(), 2)]


def test_read_list_size_cap(task, monkeypatch):
    monkeypatch.setattr(data, "MAX_LIST_BYTES", 10)
    path = list_file(task, "images/test/000000.png 1\n")
    with pytest.raises(PearError, match="bytes") as err:
        read_list(path, task, 3)
    assert str(path) in str(err.value)


def test_read_list_missing_or_directory(task):
    with pytest.raises(PearError, match="does not exist"):
        read_list(task / "nope.txt", task, 3)
    with pytest.raises(PearError, match="is a directory"):
        read_list(task / "images", task, 3)


def test_task_info_errors(tmp_path, task):
    with pytest.raises(PearError, match=r"data root .*missing.* does not exist"):
        task_info(tmp_path / "missing", "mytask")
    make_task(tmp_path, "other")
    with pytest.raises(PearError, match="nosuch") as err:
        task_info(tmp_path, "nosuch")
    assert "mytask, other" in str(err.value)
    (task / "test.txt").unlink()
    with pytest.raises(PearError, match="test.txt"):
        task_info(tmp_path, "mytask")
    for bad in ("../mytask", "", ".."):
        with pytest.raises(PearError, match="not a folder name"):
            task_info(tmp_path, bad)


def test_task_info_num_classes(tmp_path):
    make_task(tmp_path, "inferred", labels={"train800": [0, 4], "val200": [1], "test": [6]})
    assert task_info(tmp_path, "inferred").num_classes == 7
    make_task(tmp_path, "named", classes=["a", "b", "c", "d"])
    info = task_info(tmp_path, "named")
    assert info.num_classes == 4 and info.class_names == ["a", "b", "c", "d"]
    make_task(tmp_path, "dtd")
    assert task_info(tmp_path, "dtd").num_classes == 47


def test_task_info_aliases(tmp_path):
    make_task(tmp_path, "cifar100")
    make_task(tmp_path, "oxford_iiit_pet")
    info = task_info(tmp_path, "cifar")
    assert (info.name, info.dir.name, info.num_classes) == ("cifar", "cifar100", 100)
    info = task_info(tmp_path, "oxford_pet")
    assert (info.name, info.dir.name, info.num_classes) == ("oxford_iiit_pet", "oxford_iiit_pet", 37)


@pytest.mark.parametrize(
    "classes_text, needle",
    [
        ("a\n\nb\n", ":2: empty class name"),
        ("a\nb\na\n", ":3: class name 'a' repeats line 1"),
        ("\n", "empty"),
        (b"a\n\xc3\x28\n", ":2:"),
    ],
)
def test_classes_file_errors(task, classes_text, needle):
    path = list_file(task, classes_text, "classes.txt")
    with pytest.raises(PearError, match="classes.txt") as err:
        task_info(task.parent, "mytask")
    assert needle in str(err.value) and str(path) in str(err.value)


def test_builtin_task_classes_count_mismatch(tmp_path):
    make_task(tmp_path, "kitti", classes=["a", "b", "c"])
    with pytest.raises(PearError, match="names 3 classes; VTAB task kitti has 4"):
        task_info(tmp_path, "kitti")


def test_dataset_split_errors(task):
    with pytest.raises(PearError, match="split 'train'"):
        VtabDataset(task.parent, "mytask", "train", TF)
    (task / "val200.txt").unlink()
    with pytest.raises(PearError, match="no val200.txt"):
        VtabDataset(task.parent, "mytask", "val200", TF)


def test_dataset_label_out_of_range_for_builtin_task(tmp_path):
    make_task(tmp_path, "kitti", labels={"train800": [0], "val200": [3], "test": [4]})
    with pytest.raises(PearError, match=r"test\.txt:1: label 4 is out of range"):
        VtabDataset(tmp_path, "kitti", "test", TF)


def _mode_images():
    grey16 = Image.fromarray(np.full((5, 7), 32896, dtype=np.uint16))  # 32896 = 128 * 257
    assert grey16.mode == "I;16"
    palette = Image.new("P", (7, 5), 3)
    palette.putpalette([0, 0, 0] * 3 + [128, 128, 128] + [0, 0, 0] * 252)
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    return {
        "L": Image.new("L", (7, 5), 128),
        "LA": Image.new("LA", (7, 5), (128, 255)),
        "RGBA": Image.new("RGBA", (7, 5), (128, 128, 128, 10)),
        "P": palette,
        "P+transparency": transparent,
        "I;16": grey16,
        "I": Image.fromarray(np.full((5, 7), 32896, dtype=np.int32)),
        "F": Image.fromarray(np.full((5, 7), 128.0, dtype=np.float32)),
        "CMYK": Image.new("CMYK", (7, 5), (0, 0, 0, 127)),
    }


@pytest.mark.parametrize("mode", list(_mode_images()))
def test_any_mode_becomes_rgb(tmp_path, mode):
    img = _mode_images()[mode]
    raw = build_transform(4, [0, 0, 0], [1, 1, 1])
    from_memory = load_image(img, raw)
    assert from_memory.shape == (3, 4, 4)
    assert torch.allclose(from_memory, torch.full_like(from_memory, 128 / 255), atol=1.5 / 255)
    # PNG cannot store these modes; TIFF can.
    path = tmp_path / ("img.tif" if mode in ("I", "F", "CMYK") else "img.png")
    img.save(path)
    assert torch.equal(load_image(path, raw), from_memory)


def test_dataset_with_mixed_modes(task):
    for i, mode in enumerate(("L", "RGBA", "P")):
        _mode_images()[mode].save(task / f"images/test/{i:06d}.png")
    ds = VtabDataset(task.parent, "mytask", "test", TF)
    assert all(ds[i][0].shape == (3, 16, 16) for i in range(len(ds)))


def test_corrupt_images_name_the_file(task):
    good = (task / "images/test/000000.png").read_bytes()
    (task / "images/test/000001.png").write_bytes(good[: len(good) // 2])
    (task / "images/test/000002.png").write_bytes(b"not an image at all")
    ds = VtabDataset(task.parent, "mytask", "test", TF)
    for i in (1, 2):
        with pytest.raises(PearError, match=f"00000{i}.png"):
            ds[i]
    with pytest.raises(PearError, match="does not exist"):
        load_image(task / "gone.png", TF)


def test_build_transform_exact_size_and_errors():
    out = build_transform(10, [0.5] * 3, [0.25] * 3)(Image.new("RGB", (37, 13), (255, 0, 0)))
    assert out.shape == (3, 10, 10)
    assert torch.allclose(out[0], torch.full((10, 10), 2.0), atol=1e-3)
    with pytest.raises(PearError, match="image size"):
        build_transform(0, [0.5] * 3, [0.5] * 3)
    with pytest.raises(PearError, match="3 values"):
        build_transform(8, [0.5] * 2, [0.5] * 3)
    with pytest.raises(PearError, match="std"):
        build_transform(8, [0.5] * 3, [0.5, 0.0, 0.5])


_TOKENS = ["images/test/000000.png", "images/", "../", "/", "..", " ", "\t", "\n", "\r", "0",
           "1", "2", "-", "+", "9" * 30, "x", "\x00", "é", "\u2028", "\x1c"]


@settings(max_examples=50, deadline=None)
@given(payload=st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(_TOKENS), max_size=30).map(lambda t: "".join(t).encode()),
))
def test_fuzz_read_list(tmp_path_factory, payload):
    task = tmp_path_factory.getbasetemp() / "fuzz_task"
    if not task.exists():
        make_task(task.parent, task.name)
    path = list_file(task, payload, "fuzz.txt")
    try:
        items = read_list(path, task, 3)
    except PearError:
        return
    for image, label in items:
        assert image.is_file() and image.is_relative_to(task.resolve()) and 0 <= label < 3


def test_in_memory_and_path_loading_agree(task):
    path = task / "images/test/000003.png"
    buffer = io.BytesIO(path.read_bytes())
    with Image.open(buffer) as img:
        assert torch.equal(load_image(img, TF), load_image(path, TF))
