# Locust load generator for the compose network (`docker compose --profile load up locust`).
# Runs tests/load/locustfile.py against the gateway; no TensorFlow.
#   docker build -f docker/locust.Dockerfile -t fashion-serving/locust .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# Optional pip settings for restricted networks; they never reach the final stage.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (the complete pinned set from docker/lock.sh, hence --no-deps), so
# source edits reuse this layer.
COPY docker/requirements-load.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && pip install --no-deps --requirement /tmp/requirements.txt
COPY pyproject.toml ./
COPY training/ training/
COPY serving/ serving/
COPY client/ client/
# pyproject.toml names README.md as the long description; the install does not need its text.
RUN touch README.md \
    && pip install --no-deps . \
    && pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE} AS locust
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    LOCUST_HOST=http://gateway:8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app
COPY --from=builder /opt/venv /opt/venv
COPY tests/load/ /app/tests/load/
WORKDIR /app
USER 10001:10001
EXPOSE 8089
ENTRYPOINT ["locust", "-f", "/app/tests/load/locustfile.py"]
CMD []
