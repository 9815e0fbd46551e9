"""Deployment: the production instance and workspace files, `make stack` (`deploy.stack`), and what a team
deploys from them: the image, the compose file (`deploy.compose`: its credentials and one-shot set-up)
and the Helm values, which tests/deploy/ keeps consistent with the stack."""
