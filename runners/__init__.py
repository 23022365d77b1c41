"""What one trial runs in its own process: the load harness, the adapters and the trial entry point."""
