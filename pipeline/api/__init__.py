"""The vendor's service: the HTTP client, the shared limiter that every worker obeys, and backoff."""
