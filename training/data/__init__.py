"""Dataset loaders: local files first (offline), online fallbacks last."""


class DataError(Exception):
    """A dataset is missing or corrupt; the message says where we looked and what to do."""
