"""Strongroom: a self-hosted security gateway for payment data."""

from strongroom.errors import (
    AuthenticationFailed,
    Backpressure,
    CardDataRefused,
    ConfigurationError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RequestRejected,
    ServiceUnavailable,
    StorageUnavailable,
    StrongroomError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "Backpressure",
    "CardDataRefused",
    "ConfigurationError",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RequestRejected",
    "ServiceUnavailable",
    "StorageUnavailable",
    "StrongroomError",
    "__version__",
]
