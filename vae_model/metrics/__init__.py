"""Synthetic-data quality and privacy figures: fidelity, utility and memorisation, in torch."""

from vae_model.metrics.report import EvaluationReport, evaluate_samples
from vae_model.metrics.samples import read_samples

__all__ = ["EvaluationReport", "evaluate_samples", "read_samples"]
