"""seekrl.rewards."""
