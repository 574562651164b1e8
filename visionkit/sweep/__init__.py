"""Sweeps on Hydra's own engines: the objective a ``train`` job returns, the failure record a sweep
keeps going past, Optuna pruning from the per-epoch validation metric, and the job's identity that
Lightning's DDP children need (see ``visionkit.sweep.job``)."""
