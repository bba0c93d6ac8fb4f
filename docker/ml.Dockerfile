# TensorFlow images: the trainer and the project's local model server share one runtime stage,
# so TensorFlow is installed once and both targets reuse those layers.
#   docker build -f docker/ml.Dockerfile --target trainer     -t fashion-serving/trainer .
#   docker build -f docker/ml.Dockerfile --target modelserver -t fashion-serving/modelserver .
# Build context: the repository root (docker/ml.Dockerfile.dockerignore trims it).
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

FROM ${BASE_IMAGE} AS ml-runtime
# Optional pip settings for restricted networks. The container test passes PIP_NO_INDEX=1
# PIP_FIND_LINKS=/wheels and mounts a wheelhouse the host's pip downloaded.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_CERT
# tensorflow-cpu is the same `tensorflow` module without the CUDA kernels: ~1 GB smaller, and
# these images run on CPU (GPU serving is TF Serving's -gpu image). TF_PACKAGE=tensorflow for
# the full wheel.
ARG TF_PACKAGE=tensorflow-cpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=1
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app \
    && mkdir -p /models \
    && chown app:app /models
# Dependencies before the source, so editing the code does not reinstall TensorFlow. The file
# is the complete pinned set (docker/lock.sh), hence --no-deps: no resolver, same every build.
COPY docker/requirements-ml.txt /tmp/requirements.txt
RUN sed -i "s/^tensorflow==/${TF_PACKAGE}==/" /tmp/requirements.txt \
    && python3 -m venv /opt/venv \
    && pip install --no-deps --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && pip uninstall --yes pip setuptools
COPY serving/models.config serving/batching.config serving/monitoring.config /etc/fashion-serving/
COPY docker/healthcheck.py /usr/local/bin/healthcheck.py
WORKDIR /home/app

FROM ml-runtime AS trainer
COPY --chmod=755 docker/trainer-entrypoint.sh /usr/local/bin/trainer-entrypoint.sh
ENV MODELS_DIR=/models \
    ARTIFACTS_DIR=/tmp/artifacts \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/trainer-entrypoint.sh"]
CMD []

FROM ml-runtime AS modelserver
EXPOSE 8500 8501
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/usr/local/bin/healthcheck.py", "--model-available", \
         "http://127.0.0.1:8501/v1/models/fashion_mnist"]
# SIGTERM lets the server finish in-flight requests before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "serving.modelserver"]
CMD ["--model_config_file", "/etc/fashion-serving/models.config", \
     "--models_root", "/models", \
     "--port", "8500", "--rest_api_port", "8501", \
     "--enable_batching", "--batching_parameters_file", "/etc/fashion-serving/batching.config", \
     "--monitoring_config_file", "/etc/fashion-serving/monitoring.config", \
     "--allow_version_labels_for_unavailable_models", \
     "--model_config_file_poll_wait_seconds", "60"]
