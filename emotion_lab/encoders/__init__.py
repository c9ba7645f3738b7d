"""Pretrained encoders: where they come from (hub, folder, embedded package), loaded without running code."""
