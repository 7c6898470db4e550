"""Training: optimizer and schedules, the train state, jitted train and eval steps."""
