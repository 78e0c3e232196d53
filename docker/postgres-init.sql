-- Run once by the postgres image's entrypoint (psql, as the superuser) on an empty data folder:
-- one login role and one database per service, each owning its own database, so that neither
-- service can read or change the other's data and neither holds the superuser's password.
-- The passwords come from the container's environment (psql's \getenv, PostgreSQL 15 or newer),
-- never from this file.
\set ON_ERROR_STOP on
\getenv prefect_password PREFECT_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD

CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE prefect OWNER prefect;
REVOKE ALL ON DATABASE prefect FROM PUBLIC;

CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
