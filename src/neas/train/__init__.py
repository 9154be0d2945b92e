"""Training pieces: checkpoints, schedules, AMP, run directories."""
