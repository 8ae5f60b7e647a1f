# driftline worker image: the `driftline` CLI with the examples under /app/examples.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package build needs, so local .venv and caches stay out of the image.
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY trainers ./trainers
COPY examples ./examples
RUN pip install . && useradd --create-home --uid 10001 driftline

USER driftline
ENTRYPOINT ["driftline"]
CMD ["--help"]
