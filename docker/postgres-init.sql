-- The Prefect database is POSTGRES_DB; MLflow gets its own database on the same server.
CREATE DATABASE mlflow;
