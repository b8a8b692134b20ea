"""seekrl.kernels."""
