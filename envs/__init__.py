"""seekrl.envs."""
