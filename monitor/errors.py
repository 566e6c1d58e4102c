"""Every error monitor raises on purpose, in one tree.

    MonitorError
    ├── ConfigError               settings that cannot work (bad duration, SMTP without a sender, …)
    ├── RulesError                the rules directory is invalid; carries every Problem found
    ├── FetchError                a source could not be fetched or read; carries the URL
    │   ├── TransientFetchError   worth trying again soon: timeouts, connection errors, 5xx, 429
    │   └── PermanentFetchError   will not fix itself: 4xx, too large, not a feed
    └── NotifyError               a notifier could not deliver
        ├── RetryLater            try again, after `after` seconds if the channel said so
        └── PermanentFailure      the channel refused for good (bad token, archived channel, 5xx SMTP)

Errors from libraries (httpx, aiosmtplib, feedparser) are converted into these at the module that
talks to the library; nothing above that module imports the library to catch its exceptions.
Messages never contain secrets (webhook URLs, passwords).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class MonitorError(Exception):
    """Base of every error monitor raises on purpose."""


class ConfigError(MonitorError):
    """The settings cannot work as given."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in the rules directory, located as precisely as we can."""

    file: str
    line: int
    column: int | None
    reason: str
    excerpt: str | None = field(default=None, compare=False)  # the offending line of the file

    def pointed(self) -> str:
        """The problem, then the line it is on with a caret under the column, when known."""
        if self.excerpt is None or self.column is None:
            return str(self)
        line = self.excerpt.expandtabs(1)
        return f"{self}\n    {line}\n    {' ' * (self.column - 1)}^"

    def __str__(self) -> str:
        if not self.line:
            return f"{self.file}: {self.reason}"
        where = f"{self.file}:{self.line}"
        if self.column is not None:
            where += f":{self.column}"
        return f"{where}: {self.reason}"


class RulesError(MonitorError):
    """The rules directory is invalid. `problems` lists everything found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class FetchError(MonitorError):
    """A source could not be fetched or understood."""

    def __init__(self, url: str, reason: str, *, status: int | None = None):
        self.url = url
        self.reason = reason
        self.status = status
        super().__init__(f"{reason} ({url})")

    def __reduce__(self) -> tuple:  # type: ignore[type-arg]
        # So it comes back whole from a parsing process (the default would pass one message).
        return _rebuild, (type(self), self.url, self.reason, dict(self.__dict__))


def _rebuild(cls: type[FetchError], url: str, reason: str, state: dict) -> FetchError:  # type: ignore[type-arg]
    error = cls.__new__(cls)
    FetchError.__init__(error, url, reason)
    error.__dict__.update(state)
    return error


class TransientFetchError(FetchError):
    """Likely to work later: timeouts, connection failures, 5xx, 429."""

    def __init__(self, url: str, reason: str, *, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(url, reason, status=status)
        self.retry_after = retry_after


class PermanentFetchError(FetchError):
    """Will not fix itself without a change at the source: 4xx, oversized, not a feed."""


class NotifyError(MonitorError):
    """A notifier could not deliver an alert."""


class RetryLater(NotifyError):
    """The channel is unavailable for now; `after` is how long it asked us to wait, if it did."""

    def __init__(self, reason: str, *, after: float | None = None):
        self.after = after
        super().__init__(reason)


class PermanentFailure(NotifyError):
    """The channel refused the alert for a reason that retrying will not fix."""
