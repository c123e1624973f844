"""A run: the task message, its live state and budget in Redis, its stored copy in S3, plan, submit, retry."""
