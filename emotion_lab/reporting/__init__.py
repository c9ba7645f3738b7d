"""Figures and reports drawn from a run's numbers."""
