"""One training run (`pear train`): its options and flags (`options`, `flags`), the epoch loop
(`train`) with its optimizer and LR `schedule`, batches and evaluation (`batches`), how it
computes (`precision`), its resumable `state`, what it leaves in its folder (`finish`,
`checkpoint_kinds`), the folder itself and its lock (`rundir`), progress and TensorBoard
(`watch`), torchrun glue (`distributed`)."""
