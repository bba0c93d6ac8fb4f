# Locust load generator for the compose network (`docker compose --profile load up locust`).
# Runs tests/load/locustfile.py against the gateway; no TensorFlow.
#   docker build -f docker/locust.Dockerfile -t fashion-serving/locust .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
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
RUN python3 -m venv /opt/venv
COPY pyproject.toml docker/constraints.txt ./
RUN mkdir training serving client \
    && touch README.md \
    && pip install --constraint constraints.txt ".[load]" \
    && pip uninstall --yes fashion-serving
COPY training/ training/
COPY serving/ serving/
COPY client/ client/
RUN pip install --no-deps . \
    && pip uninstall --yes pip setuptools wheel

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
