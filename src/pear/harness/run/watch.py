"""Watching a run: the progress display, and TensorBoard event files with --tensorboard.

On a terminal the progress is a bar redrawn in place. Anywhere else (nohup, Slurm, CI)
a log file would keep every carriage-return redraw, so it is one plain line every
`PLAIN_SECONDS` seconds instead.

`Board` writes RUN/tensorboard/ (rank 0 only), every value on the global optimisation
step axis:

    train/loss            mean loss of each step's batch (rank 0's share under torchrun)
    train/lr              learning rate of each step
    epoch/loss            mean training loss of the epoch (all ranks)
    accuracy/train        training accuracy of the epoch, %
    accuracy/val          val200 accuracy of every epoch, % (with --select-on val200)
    accuracy/test         test accuracy at the end of the run, %
    speed/images_per_second
    params/trainable      at step 0 (before pruning) and at the prune step (after)
    pruning/map           image at the prune step: `pear inspect --plot`'s chart

and the run's options as hparams (TensorBoard's HPARAMS tab), with the accuracies as its metrics.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ...errors import PearError

__all__ = ["PLAIN_SECONDS", "Board", "Progress", "progress", "require_tensorboard"]

PLAIN_SECONDS = 10.0
# The scalars the HPARAMS tab shows beside each run's options.
HPARAM_METRICS = ("accuracy/test", "accuracy/val", "accuracy/train")


class Progress:
    """Progress of one epoch: a tqdm bar on a terminal, else a plain line at most every
    PLAIN_SECONDS (none for an epoch shorter than that: its log line says it all)."""

    def __init__(self, total: int, desc: str, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.done = total, desc, 0
        self.last = time.perf_counter()
        self.bar = None
        if _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=self.stream)

    def update(self, loss: float, acc: float, img_s: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.1f}", img_s=f"{img_s:.0f}")
            return
        now = time.perf_counter()
        if now - self.last >= PLAIN_SECONDS and self.done < self.total:
            self.last = now
            print(
                f"{self.desc}  step {self.done}/{self.total}  loss {loss:.3f}  acc {acc:.1f}%  {img_s:.0f} img/s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress(total: int, desc: str, enabled: bool) -> Progress | None:
    return Progress(total, desc) if enabled else None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def require_tensorboard():
    """torch's SummaryWriter, or a PearError naming the package to install. Runs call it
    before their folder is made, so a missing package leaves nothing behind."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise PearError(
            "--tensorboard needs the tensorboard package: pip install tensorboard "
            "(or pip install 'pear-peft[tensorboard]')"
        ) from None
    return SummaryWriter


class Board:
    """TensorBoard event files of one run (see the module docstring for the tags)."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        SummaryWriter = require_tensorboard()
        # A resumed run drops what its crashed process logged after the last saved state.
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, step: int, record: dict) -> None:
        for key, tag in (
            ("loss", "epoch/loss"),
            ("train_acc", "accuracy/train"),
            ("val_acc", "accuracy/val"),
            ("images_per_second", "speed/images_per_second"),
        ):
            if key in record:
                self.writer.add_scalar(tag, record[key], step)
        self.writer.flush()

    def test(self, step: int, accuracy: float) -> None:
        self.writer.add_scalar("accuracy/test", accuracy, step)
        self.writer.flush()

    def hparams(self, options: dict) -> None:
        """The run's options (a TrainConfig's to_dict(), Pear options nested under 'pear') for the HPARAMS
        tab, written into this run's own event file (SummaryWriter.add_hparams would open another run)."""
        from torch.utils.tensorboard.summary import hparams

        flat = {**{k: v for k, v in options.items() if k != "pear"}, **(options.get("pear") or {})}
        values = {k: v if isinstance(v, bool | int | float | str) else json.dumps(v) for k, v in flat.items()}
        for summary in hparams(values, dict.fromkeys(HPARAM_METRICS, 0.0)):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def params(self, step: int, trainable: int) -> None:
        self.writer.add_scalar("params/trainable", trainable, step)

    def pruning_map(self, step: int, info: dict) -> None:
        """`info`: positions and totals as `pear.report` gives them, with method, task and backbone."""
        from PIL import Image

        from ..trained.inspection import plot_pruning_map

        with tempfile.TemporaryDirectory(prefix="pear-map-") as tmp:
            path = plot_pruning_map(info, Path(tmp) / "map.png")
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
        self.writer.add_image("pruning/map", pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
