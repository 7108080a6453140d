"""Dagster integration for privstage."""
