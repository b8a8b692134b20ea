"""seekrl.agents."""
