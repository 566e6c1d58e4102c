"""Notifiers: one module per channel, registered here by name.

A notifier turns an `AlertMessage` into one message on its channel and either returns (sent),
raises `RetryLater` (try again later, maybe after a delay the channel asked for) or raises
`PermanentFailure` (retrying will not help). It never counts attempts or sleeps: the dispatcher
owns retries. Adding a channel is one module, one entry in `CHANNELS`, one settings block and
one test file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from monitor.notify.message import AlertMessage
    from monitor.settings import Settings

# Destination names a rule's `notify:` may use.
CHANNELS = ("slack", "email", "console")


class Notifier(Protocol):
    name: str

    async def send(self, alert: AlertMessage) -> None: ...

    async def aclose(self) -> None: ...


def build_notifiers(settings: Settings) -> dict[str, Notifier]:
    """The configured destinations. With neither Slack nor email set up, alerts go to the
    console, so the daemon is useful out of the box; `console` can also be routed to explicitly."""
    from monitor.notify.console import ConsoleNotifier
    from monitor.notify.email import EmailNotifier
    from monitor.notify.slack import SlackNotifier

    notifiers: dict[str, Notifier] = {}
    if settings.slack_webhook_url is not None:
        notifiers["slack"] = SlackNotifier(settings.slack_webhook_url,
                                           timeout=settings.notify_timeout.total_seconds())
    if settings.email_configured:
        notifiers["email"] = EmailNotifier.from_settings(settings)
    notifiers["console"] = ConsoleNotifier()
    return notifiers


def default_destinations(notifiers: dict[str, Notifier]) -> tuple[str, ...]:
    """Where a rule without `notify:` sends: every configured channel, else the console."""
    configured = tuple(name for name in notifiers if name != "console")
    return configured or ("console",)
