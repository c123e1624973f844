"""What S3 alone says about a run (reconcile) and its renderings: terminal, JSON, CSV, HTML. Never Redis."""
