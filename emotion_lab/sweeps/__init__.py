"""Hyperparameter sweeps: the Optuna study behind `hparams_search=optuna`."""
