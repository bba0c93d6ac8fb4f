"""The one implementation of each format: tensors, TF Serving JSON, images, housing features."""


class CodecError(ValueError):
    """Input that cannot be turned into (or out of) a tensor; the message is safe to show users."""
