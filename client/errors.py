"""The client's error type and its documented exit codes (see docs/clients.md)."""

from __future__ import annotations

EXIT_OK = 0
#: Unexpected internal error (a bug): should never happen.
EXIT_INTERNAL = 1
#: Usage error or bad local input: unreadable/undecodable file, bad features, bad CSV.
EXIT_USAGE = 2
#: No usable answer from the server: unreachable, timed out, or a server-side failure (5xx,
#: UNAVAILABLE, INTERNAL, ...). Retrying later may help.
EXIT_UNAVAILABLE = 3
#: The server answered and refused the request: unknown model/version/label (NOT_FOUND, 404)
#: or a request it considers invalid (INVALID_ARGUMENT, FAILED_PRECONDITION, 4xx).
EXIT_REJECTED = 4


class ClientError(Exception):
    """An error to report as one line on stderr, exiting with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
