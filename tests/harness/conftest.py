import shutil
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_vtab):
    """A finished 2-epoch `pear` run (2-block ViT of width 32 at 32 px) on a copy of
    tiny_vtab's 'toy' task with class names red, green, blue. Returns .run (the run
    folder), .data and .task. Shared by the session: copy it before changing anything."""
    from pear.harness.train import TrainConfig, train

    data = tmp_path_factory.mktemp("named_vtab")
    shutil.copytree(tiny_vtab / "toy", data / "toy")
    (data / "toy" / "classes.txt").write_text("red\ngreen\nblue\n")
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    with pytest.warns(UserWarning, match="randomly initialised"):  # no weights file: random init by design
        train(TrainConfig(data=str(data), task="toy", out=str(run), backbone="vit_tiny_patch16_224",
                          model_kwargs={"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
                          img_size=32, epochs=2, batch_size=16, workers=0, progress=False, device="cpu"))
    return SimpleNamespace(run=run, data=data, task="toy")
