"""Prefect flows: thin recipes over the tasks."""
