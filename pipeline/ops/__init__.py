"""Operations: what Prometheus scrapes.

    metrics.py    the workers' metric objects and the ``record_*`` calls the conversion makes (best effort)
    serve.py      a worker's ``/metrics`` in prefork-safe multiprocess mode
    exporter.py   ``sts-pipeline metrics``: what no single worker knows (queue depth, the limiter, workers, runs)

No label carries a job id, an object key, a URI or the API key: every label takes a bounded set of values.
"""
