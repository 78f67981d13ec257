"""The error vocabulary every channel raises from, and the runtime acts on.

The runtime decides what to do with a failure by its class alone:

- ``AuthError``: stop the flow, tell the admin; retrying cannot help.
- ``RateLimited``: defer the job until ``retry_after``; no retry is spent.
- ``TransientError``: retry with backoff (timeouts, 5xx, dropped connections).
- ``RejectedItem``: one SKU or order is bad; record it and let the rest flow.
- ``ContractError``: the remote said something impossible; a bug to report.
"""

from __future__ import annotations


class ChannelhubError(Exception):
    """Base class of every error channelhub raises on purpose."""


class ConfigurationError(ChannelhubError):
    """The hub itself is configured wrongly (bad URL, missing key, bad plugin)."""


class ValidationError(ChannelhubError):
    """Input failed validation; ``messages`` maps each bad field to its problems."""

    def __init__(self, messages: dict | list | str, field: str | None = None) -> None:
        self.messages = messages
        self.field = field
        super().__init__(_describe(messages))


class IllegalTransition(ChannelhubError):
    """An account (or order) was asked to move to a state it cannot reach from where it is."""


class NotFound(ChannelhubError):
    """A record the caller named does not exist (in the caller's organisation)."""


class LockBusy(ChannelhubError):
    """Another worker is running the same flow for the same account."""


class ChannelError(ChannelhubError):
    """Base of the errors a channel raises about its remote system."""

    def __init__(self, message: str, *, status: int | None = None, detail: object = None) -> None:
        self.status = status
        self.detail = detail
        super().__init__(message)


class AuthError(ChannelError):
    """Credentials were refused. Stop and tell the admin; never retry automatically."""


class RateLimited(ChannelError):
    """The remote asked us to slow down. Defer by ``retry_after`` seconds; spends no retry."""

    def __init__(self, message: str = "rate limited", *, retry_after: float = 1.0, **kwargs) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class TransientError(ChannelError):
    """A failure that may pass: timeout, 5xx, dropped connection. Retry with backoff."""


class RejectedItem(ChannelError):
    """The remote refused one item (a SKU, an order); the rest of the batch flows."""

    def __init__(self, message: str, *, key: str | None = None, field: str | None = None, **kwargs) -> None:
        self.key = key
        self.field = field
        super().__init__(message, **kwargs)


class ContractError(ChannelError):
    """The remote answered something the API contract says it cannot (bad shape, missing field)."""


def _describe(messages: dict | list | str) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{field}: {_describe(problem)}" for field, problem in messages.items())
    if isinstance(messages, list):
        return ", ".join(_describe(item) for item in messages)
    return str(messages)
