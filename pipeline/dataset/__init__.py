"""Datasets: nightly voice datasets from the pipeline's two ends.

``prefix`` turns an S3 folder of clips into manifest shards (streamed, so a folder of 100,000 clips needs no more
memory than one of ten); the ``export_*`` modules turn a run's provenance into datasets people load directly
(Hugging Face Parquet, WebDataset tar shards, a NeMo manifest), also streamed, from S3 alone.
"""
