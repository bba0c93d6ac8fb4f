"""``python -m serving.modelserver``: the local TF Serving-compatible model server."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from serving.modelserver.settings import parse_settings

    settings = parse_settings(argv)  # exits 2 with a usage line on bad flags
    # The config files are read again by ModelServer; reading them here first, before
    # TensorFlow is imported, keeps a bad file to one line instead of TF's start-up chatter.
    from serving.modelserver import config

    try:
        config.load_model_config(settings.model_config_file, settings.models_root)
        if settings.enable_batching:
            config.load_batching_config(settings.batching_parameters_file)
        config.load_monitoring_config(settings.monitoring_config_file)
    except config.ConfigError as exc:
        print(f"modelserver: config error: {exc}", file=sys.stderr)
        return 2
    # TensorFlow's C++ INFO/WARNING chatter would drown the one-line-per-load log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from serving.modelserver.server import configure_logging

    configure_logging()
    from serving.modelserver.config import ConfigError
    from serving.modelserver.server import ModelServer, StartupError

    try:
        server = ModelServer(settings)
        server.install_signal_handlers()
        server.start()
    except ConfigError as exc:
        print(f"modelserver: config error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"modelserver: {exc}", file=sys.stderr)
        server.stop()
        return 1
    server.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
