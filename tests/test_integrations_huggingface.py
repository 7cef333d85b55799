"""PearCallback prunes and shares inside a transformers Trainer, on the Trainer's own optimizer."""

import torch
from torch import nn

import pear
from pear import PearConfig

transformers = __import__("pytest").importorskip("transformers")  # a test dependency; optional for users


class _WithLoss(nn.Module):
    """What a Trainer trains: a module whose forward returns the loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, labels):
        logits = self.model(pixel_values)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class _Data(torch.utils.data.Dataset):
    def __init__(self, batch):
        self.x, self.y = batch

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def test_trainer_callback_prunes_at_the_step_and_keeps_training(model_factory, batch_factory, tmp_path):
    from pear.integrations.huggingface import PearCallback

    model = model_factory("vit")
    pear.attach(model, PearConfig(init="random", prune_ratio=0.5))
    callback = PearCallback(model, prune_step=2)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4,
                                          learning_rate=1e-2, save_strategy="no", report_to=[], use_cpu=True,
                                          logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=_WithLoss(model), args=args, train_dataset=_Data(batch_factory("vit", n=8)),
                                   callbacks=[callback])
    trainer.train()
    assert callback.pruner.pruned and callback.pruner.steps == 4 and model.pear_state.pruned
    live = {id(p) for p in model.parameters() if p.requires_grad}
    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == live
    assert pear.summary(model).pruned + pear.summary(model).shared == 3
