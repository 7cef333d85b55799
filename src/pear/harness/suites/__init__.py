"""`pear suite`: the `Suite` value (`suite`), its runs in index order (`suite_runs`), running them
(`suite_exec`), the method grammar (`grammar`: pear-imp-NAME, METHOD@FIELD=VALUE), the results
table (`results`), VTAB's val200 tuning protocol (`tuning`) and Slurm job arrays (`slurm`)."""
