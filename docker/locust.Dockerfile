# Locust load generator for the compose network (`docker compose --profile load up locust`).
# Runs tests/load/locustfile.py against the gateway; no TensorFlow.
#   docker build -f docker/locust.Dockerfile -t fashion-serving/locust .
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The project itself as a wheel (pure Python); only the wheel leaves this stage. Identical in
# every Dockerfile, so builders share its cache.
FROM ${BASE_IMAGE} AS wheel
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
COPY training/ training/
COPY serving/ serving/
COPY client/ client/
# pyproject.toml names README.md as the long description; the wheel does not need its text.
RUN touch README.md \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-deps --wheel-dir /dist .

# Third-party dependencies: the complete pinned set from docker/lock.sh (hence --no-deps: no
# resolver, the same versions every build). Cached until docker/requirements-load.txt changes.
FROM ${BASE_IMAGE} AS deps
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
COPY docker/requirements-load.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && pip install --no-deps --requirement /tmp/requirements.txt

FROM ${BASE_IMAGE} AS locust
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    LOCUST_HOST=http://gateway:8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /dist/ /tmp/dist/
# The project on top of the cached dependencies, then pip itself goes: nothing in the final
# image can install or build.
RUN pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && pip uninstall --yes pip setuptools
COPY tests/load/ /app/tests/load/
WORKDIR /app
USER 10001:10001
EXPOSE 8089
ENTRYPOINT ["locust", "-f", "/app/tests/load/locustfile.py"]
CMD []
