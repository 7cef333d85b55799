"""`pear train` leaves a model card (README.md) in RUN/checkpoint, and records the weights it used."""

import json


def test_train_writes_a_model_card_with_the_test_accuracy(tiny_run):
    ckpt = tiny_run.run / "checkpoint"
    card = (ckpt / "README.md").read_text()
    metrics = json.loads((tiny_run.run / "metrics.json").read_text())
    info = json.loads((ckpt / "pear_config.json").read_text())
    assert f"Test accuracy: {metrics['test_acc']:.2f}%" in card
    assert "Task: toy (method pear)" in card and "red, green, blue" in card
    assert "pear train --data" in card and "--method pear" in card and str(tiny_run.run) in card
    # The card is written before the folder is measured: the recorded bytes are the folder's.
    assert metrics["checkpoint_file_bytes"] == sum(f.stat().st_size for f in ckpt.iterdir() if f.name != "README.md")
    for p in info["positions"]:
        assert f"| {p['name']} |" in card
    assert info["backbone"]["weights_source"] == "random"  # no --weights: random init, recorded as such
