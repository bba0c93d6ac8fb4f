# Flask gateway under gunicorn. No TensorFlow: the base install (`pip install .`) is the whole
# runtime. Multi-stage: the build backend stays in the build stages; the final stage gets the
# ready virtualenv (pip removed, no compilers) and runs as an unprivileged user.
#   docker build -f docker/gateway.Dockerfile -t fashion-serving/gateway .
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
# resolver, the same versions every build). Cached until docker/requirements-base.txt changes.
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
COPY docker/requirements-base.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && pip install --no-deps --requirement /tmp/requirements.txt

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
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /dist/ /tmp/dist/
# The project on top of the cached dependencies, then pip itself goes: nothing in the final
# image can install or build.
RUN pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && pip uninstall --yes pip setuptools
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
