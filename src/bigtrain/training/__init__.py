"""Training: the one LightningModule, optimizers and their parameter groups, schedules, metrics."""
