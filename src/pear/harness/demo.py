"""`pear demo`: the built-in default job, real weights on real data, a few minutes on a CPU.

EfficientNet-Lite0 with its built-in ImageNet weights, adapted with Pear on the
built-in Fashion-MNIST 1k task at 112 px (the settings of the benchmark table), then
the accuracy, parameters, stored bytes and the pruning map.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PearError
from .builders import build_dataset
from .files import read_mapping
from .inspection import inspect_path, render_table
from .train import TrainConfig, train

DEMO = dict(task="fashion_mnist", backbone="tf_efficientnet_lite0", method="pear", img_size=112, epochs=5,
            warmup_epochs=1, batch_size=32)


def run_demo(out: str = "runs/demo", data: str = "data", epochs: int | None = None, overwrite: bool = False) -> dict:
    out_dir, data_dir = Path(out), Path(data)
    if not (data_dir / DEMO["task"]).is_dir():
        print(f"demo: building the Fashion-MNIST 1k task into {data_dir}")
        build_dataset(DEMO["task"], data_dir)
    metrics_file = out_dir / "metrics.json"
    if metrics_file.is_file() and not overwrite:
        print(f"demo: {out_dir} already holds a finished demo run (pass --overwrite to train again)")
        metrics = read_mapping(metrics_file, "metrics file")
    else:
        cfg = TrainConfig(**{**DEMO, "epochs": epochs or DEMO["epochs"]}, data=str(data_dir), out=str(out_dir),
                          overwrite=overwrite, resume=out_dir.is_dir() and not overwrite)
        if not cfg.prune_epoch < cfg.epochs:
            raise PearError(f"demo: --epochs must be at least {cfg.prune_epoch + 1} so there is training after pruning")
        metrics = train(cfg)
    print()
    print(render_table(inspect_path(out_dir)))
    print()
    print(f"test accuracy {metrics['test_acc']:.2f}%   trainable parameters {metrics['trainable_params']:,} "
          f"(before pruning {metrics['trainable_params_before']:,})   stored task checkpoint "
          f"{metrics['stored_bytes']:,} bytes in {out_dir / 'checkpoint'}")
    return metrics
