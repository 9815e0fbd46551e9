"""A worker handler that imports the orchestrator: what the isolation test must catch."""

import dagster  # noqa: F401 - the leak under test

from serving.worker import ModelHandler


class LeakyHandler(ModelHandler):
    architectures = {}
