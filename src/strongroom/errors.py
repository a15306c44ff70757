"""Strongroom's exception tree.

Every error the product raises on purpose is a :class:`StrongroomError`. The API
maps each class to one problem type (``api/problems.py``); the CLI prints its
message after ``Error:``. Driver exceptions (sqlite3, asyncpg, redis, kafka) are
translated at the adapter boundary and never escape raw.

    StrongroomError
    ├── ConfigurationError        invalid settings; the CLI exits 2
    ├── RequestRejected           the caller sent something we refuse (4xx)
    │   ├── InvalidRequest        schema validation failed (422, with field errors)
    │   ├── CardDataRefused       a PAN outside the card field, or CVV/PIN/track data (422)
    │   ├── PayloadTooLarge       body or event over its size limit (413)
    │   ├── UnsupportedMediaType  body not sent as JSON (415)
    │   ├── NotFound              unknown object, or one of another tenant (404)
    │   ├── Conflict              state does not allow the operation (409)
    │   │   └── DataUnreadable    a sealed value cannot be opened (409; opaque by design)
    │   └── SignatureRejected     a transaction signature is missing or wrong (422)
    ├── AuthenticationFailed      missing, wrong, revoked or expired credential (401)
    ├── PermissionDenied          credential lacks a scope (403)
    ├── RateLimited               over a rate limit (429)
    └── ServiceUnavailable        a dependency cannot take the write (503)
        ├── StorageUnavailable    the store or log failed; nothing was acknowledged
        ├── Backpressure          the writer queue is full; retry after a pause
        └── KeyManagerUnavailable the KMS cannot be reached and no cached data key serves
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field that failed validation, named by its path (``events[3].amount``)."""

    field: str
    message: str


class StrongroomError(Exception):
    """Base of every error Strongroom raises on purpose."""

    #: Short machine-readable code, also the last segment of the problem type.
    code = "error"


class ConfigurationError(StrongroomError):
    """Raised when settings are invalid; the message names the variable and the fix."""

    code = "invalid_configuration"


class RequestRejected(StrongroomError):
    """Raised when the caller's request is refused; the message is safe to return."""

    code = "bad_request"
    status = 400

    def __init__(self, detail: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class InvalidRequest(RequestRejected):
    """Raised when a body fails schema validation."""

    code = "validation_failed"
    status = 422


class CardDataRefused(RequestRejected):
    """Raised when a request carries a PAN outside the card field, or any CVV/PIN/track data.

    The detail and field errors name paths only; they never echo the digits.
    """

    status = 422

    def __init__(self, code: str, detail: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(detail, errors)
        self.code = code


class PayloadTooLarge(RequestRejected):
    """Raised when a request body or a single event exceeds its byte limit."""

    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(RequestRejected):
    """Raised when a body is not sent as JSON."""

    code = "unsupported_media_type"
    status = 415


class NotFound(RequestRejected):
    """Raised for unknown objects, and for objects of another tenant."""

    code = "not_found"
    status = 404


class Conflict(RequestRejected):
    """Raised when an operation conflicts with current state."""

    code = "conflict"
    status = 409


class DataUnreadable(Conflict):
    """Raised when sealed data cannot be opened: its data key was shredded or is
    refused by the minimum decryption version, or the value was altered.

    Says no more than that, on purpose.
    """

    code = "data_unreadable"


class SignatureRejected(RequestRejected):
    """Raised when a transaction that must be signed is not, or its signature is wrong."""

    status = 422

    def __init__(self, code: str, detail: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(detail, errors)
        self.code = code


class AuthenticationFailed(StrongroomError):
    """Raised when a credential is missing, malformed, unknown, revoked or expired.

    ``reason`` feeds a metric label and the audit log; the client always sees the
    same message whatever the reason, so a guesser learns nothing.
    """

    code = "unauthorized"

    def __init__(self, reason: str) -> None:
        super().__init__("A valid API key is required.")
        self.reason = reason


class PermissionDenied(StrongroomError):
    """Raised when a credential is valid but lacks the scope an operation needs."""

    code = "forbidden"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RateLimited(StrongroomError):
    """Raised when a caller is over its rate limit."""

    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Rate limit exceeded; retry after the indicated number of seconds.")
        self.retry_after = retry_after


class ServiceUnavailable(StrongroomError):
    """Raised when a dependency cannot take the write; nothing was acknowledged."""

    code = "service_unavailable"
    retry_after = 1


class StorageUnavailable(ServiceUnavailable):
    """Raised when the store or the event log fails; the write was not committed."""

    code = "storage_unavailable"


class Backpressure(ServiceUnavailable):
    """Raised when the log writer's queue is past its bound."""

    code = "overloaded"


class KeyManagerUnavailable(ServiceUnavailable):
    """Raised when the key manager cannot be reached and no cached data key can serve."""

    code = "kms_unavailable"
    retry_after = 5
