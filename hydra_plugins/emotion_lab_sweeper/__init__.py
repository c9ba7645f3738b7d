"""emotion_lab's Hydra sweeper: `hydra/sweeper=optuna_study` (Hydra imports every module under hydra_plugins)."""
