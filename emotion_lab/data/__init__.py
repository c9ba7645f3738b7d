"""Datasets, augmentation, feature caches and the DataModule."""
