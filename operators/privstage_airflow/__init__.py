"""Airflow 3 provider for privstage."""
