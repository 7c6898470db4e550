"""Prune-retrain phases: plans (`plan`), the runner with resume (`runner`) and the phase's
evaluation (`evaluate`), shared by every strategy with phases."""
