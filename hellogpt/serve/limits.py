"""What one client may ask of `hellogpt serve`: the bounds on a request and on the server's queue, with their defaults.

Every bound is checked before the work it guards (a body's size before it is read whole, a prompt's characters
before it is tokenised) and refused with OpenAI's error object naming the field and the limit, so that no single
client can take the memory, the queue or the connections of the others. Each has a `hellogpt serve` flag; the
defaults live here (stdlib only, so the CLI reads them without importing the server).
"""

from __future__ import annotations

from dataclasses import dataclass

MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class ServeLimits:
    """The bounds a server enforces; the defaults suit one machine serving a few users."""

    # A request body larger than this is refused (413) from its Content-Length, or while a chunked one is read.
    max_body_bytes: int = 4 * MEBIBYTE
    # A prompt (or a conversation's rendered transcript) longer than this is refused before tokenising: only the
    # last block_size tokens are used, and tokenising megabytes of text would hold up everyone else.
    max_prompt_chars: int = 200_000
    # A conversation with more messages than this is refused.
    max_messages: int = 1024
    # Requests waiting for a free decoding slot; beyond, a request is refused with 429 and Retry-After.
    max_waiting: int = 256
    # Open connections and requests in flight (uvicorn's limit_concurrency); beyond, 503.
    max_connections: int = 512
    # An idle kept-alive connection is closed after this many seconds (uvicorn's timeout_keep_alive).
    keep_alive_seconds: float = 5.0
    # A request's headers and body must arrive within this many seconds (slow clients hold a connection).
    read_timeout_seconds: float = 30.0


# Stop strings: OpenAI's own count, and a length past which a stop string is not one a reply would contain.
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 256
# The seconds a client told 429 is asked to wait before trying again.
RETRY_AFTER_SECONDS = 1
