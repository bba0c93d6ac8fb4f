"""Command-line clients: ``python -m client grpc ...`` (TF Serving's gRPC API, via
``serving.tfs_client``) and ``python -m client http ...`` (the gateway's HTTP API).

Deliberately free of TensorFlow: they run on any machine with the base install.
"""
