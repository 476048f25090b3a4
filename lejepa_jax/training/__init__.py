"""Training: the train state, optimizers, the pure step, the step loop, checkpoints, the event log."""
