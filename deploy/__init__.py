"""Deployment: the production instance and workspace files, and `make stack` (`deploy.stack`)."""
