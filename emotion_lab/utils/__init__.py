"""Hydra plumbing and run helpers shared by the commands and tools."""
