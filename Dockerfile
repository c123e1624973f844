# One image for the worker, the CLI and the offline STS server.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY workers ./workers
COPY manifests ./manifests
RUN pip install --no-cache-dir .
RUN useradd --create-home sts
USER sts
ENTRYPOINT ["sts-pipeline"]
CMD ["worker", "-c", "4"]
