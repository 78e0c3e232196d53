"""Prefect flows and the `vae-pipeline` command: thin steps over `vae_model`, tracked in MLflow."""
