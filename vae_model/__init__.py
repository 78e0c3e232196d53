"""vae_model: the VAE library behind vae-pipeline. It knows nothing of Prefect or MLflow."""

__version__ = "0.1.0"
