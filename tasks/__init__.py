"""Prefect tasks: the pipeline's plain functions with retry, naming and caching policy on top."""
