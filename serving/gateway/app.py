"""The Flask application factory: ``create_app(config)``.

Run it under gunicorn:
``gunicorn -c serving/gateway/gunicorn.conf.py 'serving.gateway:create_app()'``.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from serving.gateway import admission, demo, health, meta, metrics, predict, security
from serving.gateway.config import GatewayConfig
from serving.gateway.errors import register_error_handlers
from serving.gateway.state import GatewayState

log = logging.getLogger("serving.gateway")


def create_app(config: GatewayConfig | None = None) -> Flask:
    """A gateway app; ``config`` defaults to ``GatewayConfig.from_env()``."""
    config = config or GatewayConfig.from_env()
    _configure_logging()
    app = Flask("serving.gateway", static_folder=None)
    # werkzeug answers 413 past this many body bytes, for JSON, multipart and raw bodies alike.
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = config.max_body_bytes
    app.config["MAX_FORM_PARTS"] = config.max_instances + 16
    app.json.sort_keys = False  # only used by Flask internals; our bodies go through orjson
    app.extensions["gateway"] = GatewayState(config)
    register_error_handlers(
        app, retry_after=config.retry_after_seconds, max_body_bytes=config.max_body_bytes
    )
    # demo first: it owns GET / for browsers and hands API clients meta's JSON index.
    for blueprint in (demo.blueprint, predict.bp, health.bp, meta.bp):
        app.register_blueprint(blueprint)
    _install_metrics_hooks(app)
    # After the metrics hooks: requests refused for a missing/wrong API key are counted too.
    security.install(app, config)
    # After the metrics hooks (refusals are counted) and authentication: admission.install.
    admission.install(app, config)
    log.info("gateway configuration: %s", config.as_dict())
    return app


def _install_metrics_hooks(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.start = time.perf_counter()
        metrics.IN_FLIGHT.inc()

    @app.after_request
    def _record(response: Response) -> Response:
        # Runs for error-handler responses too; `g.model` / `g.version` are set by the routes.
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else "unmatched"
        labels = (
            endpoint,
            g.get("model", ""),
            str(g.get("version", "")),
            str(response.status_code),
        )
        metrics.child(metrics.REQUESTS, *labels).inc()
        metrics.child(metrics.REQUEST_SECONDS, *labels).observe(time.perf_counter() - g.start)
        return response

    @app.teardown_request
    def _done(_error: BaseException | None) -> None:
        if "start" in g:
            metrics.IN_FLIGHT.dec()


def _configure_logging() -> None:
    logger = logging.getLogger("serving")
    if logger.handlers:
        return
    gunicorn_logger = logging.getLogger("gunicorn.error")
    if gunicorn_logger.handlers:  # under gunicorn: share its error log and level
        logger.handlers = list(gunicorn_logger.handlers)
        logger.setLevel(gunicorn_logger.level)
        logger.propagate = False
    else:
        logging.basicConfig(level=logging.INFO)
