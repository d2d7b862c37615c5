"""Gateway sections of the apply_config file (providers, deployments, policy, routing)."""

EXTENSIONS: dict = {}
