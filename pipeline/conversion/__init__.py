"""The worker-side job: from a task message to a committed output or a failure record."""
