"""Training: what train sections say (specs); losses, metrics and optimizers come with training."""
