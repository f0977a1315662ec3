"""Prefect flows and the front doors that start them (CLI, webhook). Flows only orchestrate."""
