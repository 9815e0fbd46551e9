"""Dagster code locations, one per worked example."""
