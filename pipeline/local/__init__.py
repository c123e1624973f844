"""Local services (redis-server, moto S3, the offline server) for the demo, tests and benchmarks; the demo."""
