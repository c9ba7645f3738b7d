"""Measurement tools: benchmark, inference and head timings, sweep reports (`python -m emotion_lab.tools.<name>`)."""
