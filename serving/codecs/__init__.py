"""The one implementation of each wire format: tensors, TF Serving JSON, images."""


class CodecError(ValueError):
    """Input that cannot be turned into (or out of) a tensor; the message is safe to show users."""
