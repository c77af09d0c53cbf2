"""The one exception tree of ghacache.

Every class carries the HTTP status it implies (``status``) and a short machine code
(``code``, Twirp's vocabulary) so the server maps any error to a response in one place::

    GhacacheError
    ├── ProtocolError (400)            abstract
    │   ├── LocalProtocolError         we built something invalid
    │   └── RemoteProtocolError        the peer sent something invalid
    │       └── RangeNotSatisfiable (416)
    ├── CacheError                     domain outcomes
    │   ├── EntryNotFound (404)   ├── EntryExists (409)      ├── UploadStateError (412)
    │   ├── EntryTooLarge (413)   ├── Unauthenticated (401)  ├── ScopeForbidden (403)
    │   └── RateLimited (429)
    ├── StorageError (500)             BlobNotFound (404) · BlobExists (409) · StorageFull (507)
    │                                  · StorageUnavailable (503)
    ├── MetadataError (500)            index/database failures · MetadataFull (507)
    └── ClientError                    raised by ghacache.client
        ├── TransportError             network failure or timeout
        │   └── DeadlineExceeded       retries ran out of time (also a TimeoutError)
        └── ServerError                the server answered an error (status, message)
            ├── InvalidResponse        the answer broke the protocol
            ├── RemoteEntryExists      a reservation found the key taken (also EntryExists)
            ├── RemoteEntryNotFound    a found entry vanished before it was read (also EntryNotFound)
            └── RemoteRateLimited      429 and no retry left (also RateLimited)

A cache miss is a return value (``None``), never an exception.

Out of space is 507 Insufficient Storage (Twirp code ``resource_exhausted``) whether the blob
store or the database ran out: not Twirp's 429 for that code, which the official client
reports as a rate limit, and no status that clients retry (the official Twirp client retries
500 and 502-504, the Azure SDK 500 and 503, ghacache's client any 5xx but 501, 505 and 507):
sending the same bytes to a full disk again only wastes the job's time. An object
store that fails or cannot be reached is 503 with ``Retry-After`` (Twirp ``unavailable``),
which they all retry.
"""

from __future__ import annotations


class GhacacheError(Exception):
    """Base class of every error ghacache raises on purpose."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(GhacacheError):
    """A message broke the protocol; abstract, use Local/RemoteProtocolError."""

    status = 400
    code = "invalid_argument"

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError(
                "ProtocolError is abstract; raise LocalProtocolError or RemoteProtocolError"
            )
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """We were asked to build a message that the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a message that the protocol does not allow."""


class RangeNotSatisfiable(RemoteProtocolError):
    """A Range header asks for bytes outside the blob."""

    status = 416
    code = "out_of_range"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


class CacheError(GhacacheError):
    """A domain outcome of a cache operation."""


class EntryNotFound(CacheError):
    """No entry or reservation matches the request."""

    status = 404
    code = "not_found"


class EntryExists(CacheError):
    """An entry with the same repository, scope, key and version already exists."""

    status = 409
    code = "already_exists"


class UploadStateError(CacheError):
    """The upload is not in a state that allows this step (e.g. finalize before upload)."""

    status = 412
    code = "failed_precondition"


class EntryTooLarge(CacheError):
    """An entry or block is larger than the server accepts."""

    status = 413
    code = "invalid_argument"


class Unauthenticated(CacheError):
    """The request carries no valid credential (token or signed URL)."""

    status = 401
    code = "unauthenticated"


class ScopeForbidden(CacheError):
    """The credential is valid but does not allow this operation."""

    status = 403
    code = "permission_denied"


class RateLimited(CacheError):
    """Too many requests; retry after ``retry_after_s`` seconds."""

    status = 429
    code = "resource_exhausted"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageError(GhacacheError):
    """The blob store failed."""


class BlobNotFound(StorageError, FileNotFoundError):
    """The blob's bytes are not in the store."""

    status = 404
    code = "not_found"


class BlobExists(StorageError):
    """A create-only write found the blob already present."""

    status = 409
    code = "already_exists"


class StorageFull(StorageError):
    """The store has no space left for this write."""

    status = 507
    code = "resource_exhausted"


class StorageUnavailable(StorageError):
    """The object store failed or could not be reached; retry after ``retry_after_s``."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class MetadataError(GhacacheError):
    """The metadata index (database) failed."""


class MetadataFull(MetadataError):
    """The database has no space left to grow (SQLite's SQLITE_FULL)."""

    status = 507
    code = "resource_exhausted"


class ClientError(GhacacheError):
    """A client-side failure talking to a cache server."""


class TransportError(ClientError):
    """The request did not complete: connection refused or reset, or a timeout."""


class ServerError(ClientError):
    """The server answered with an error status; ``message`` is the server's own text."""

    def __init__(self, message: str, *, status: int, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class DeadlineExceeded(TransportError, TimeoutError):
    """The deadline passed before the request succeeded; ``message`` names the last failure."""


class InvalidResponse(ServerError):
    """The server answered something the protocol does not allow (bad JSON, missing field)."""


class RemoteEntryExists(ServerError, EntryExists):
    """The server refused a reservation because the key and version are already taken.

    Callers that only want the entry to exist (BuildKit blob saves) treat this as success.
    """


class RemoteEntryNotFound(ServerError, EntryNotFound):
    """An entry the service had found is gone (evicted or deleted) before it could be read."""


class RemoteRateLimited(ServerError, RateLimited):
    """The server kept answering 429 until no attempt was left."""

    def __init__(
        self, message: str, *, status: int = 429, body: str = "", retry_after_s: int
    ) -> None:
        GhacacheError.__init__(self, message)
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s
