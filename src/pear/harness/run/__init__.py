"""One training run (`pear train`): its options and flags (`options`), the epoch loop (`train`),
batches and evaluation, how it computes (`precision`), its resumable state, what it leaves in its
folder (`finish`, `checkpoint_kinds`), the folder itself and its lock (`rundir`), progress and
TensorBoard (`watch`), torchrun glue (`distributed`)."""
