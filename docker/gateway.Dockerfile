# Flask gateway under gunicorn. No TensorFlow: the base install (`pip install .`) is the whole
# runtime. Multi-stage: pip and the build backend stay in the builder; the final stage gets a
# ready virtualenv and runs as an unprivileged user.
#   docker build -f docker/gateway.Dockerfile -t fashion-serving/gateway .
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
COPY docker/requirements-base.txt /tmp/requirements.txt
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

FROM ${BASE_IMAGE} AS gateway
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_SERVER_GRPC=modelserver:8500 \
    MODEL_CARDS_DIR=/models \
    GATEWAY_BIND=0.0.0.0:8000 \
    GATEWAY_GRACEFUL_TIMEOUT=25
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app
COPY --from=builder /opt/venv /opt/venv
COPY serving/gateway/gunicorn.conf.py /etc/fashion-serving/gunicorn.conf.py
COPY docker/healthcheck.py /usr/local/bin/healthcheck.py
WORKDIR /home/app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/bin/healthcheck.py", "http://127.0.0.1:8000/healthz"]
# gunicorn treats SIGTERM as a graceful stop: it stops accepting, lets workers finish their
# in-flight requests for up to GATEWAY_GRACEFUL_TIMEOUT seconds (gunicorn.conf.py reads it), then
# exits. Orchestrators must wait longer than that before SIGKILL (compose stop_grace_period,
# k8s terminationGracePeriodSeconds). Exec form: gunicorn is PID 1 and gets the signal itself.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "/etc/fashion-serving/gunicorn.conf.py", "serving.gateway:create_app()"]
