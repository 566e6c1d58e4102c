"""Notifiers: one module per channel, registered here by name.

A notifier turns an `AlertMessage` (or an `AlertGroup`: a digest, or a burst grouped
instead of a flood) into one message on its channel and either returns (sent — with the
channel's reference to the message, when it has one), raises `RetryLater` (try again later,
maybe after a delay the channel asked for) or raises `PermanentFailure` (retrying will not
help). It never counts attempts or sleeps: the dispatcher owns retries and pacing. Adding a
channel is one module, one entry in `CHANNELS`, one branch in `build_notifier` and one test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from monitor.destinations import Destination
    from monitor.notify.message import AlertGroup, AlertMessage
    from monitor.settings import Settings

# The kinds of destination.
CHANNELS = ("slack", "email", "webhook", "apprise", "console")


class Notifier(Protocol):
    name: str
    group_limit: int  # the most alerts one grouped message may carry

    async def send(self, alert: AlertMessage, *, reply_to: str | None = None) -> str | None: ...

    async def send_group(self, group: AlertGroup) -> str | None: ...

    async def aclose(self) -> None: ...


def build_notifier(settings: Settings, destination: Destination) -> Notifier:
    """The notifier for one destination. Raises PermanentFailure when it cannot be built."""
    spec = destination.spec
    timeout = settings.notify_timeout.total_seconds()
    if spec.type == "slack":
        from monitor.notify.slack import SlackBotNotifier, SlackNotifier

        if spec.bot_token is not None:
            assert spec.channel
            return SlackBotNotifier(spec.bot_token, spec.channel, api_url=spec.api_url,
                                    timeout=timeout)
        assert spec.webhook_url is not None
        return SlackNotifier(spec.webhook_url, timeout=timeout)
    if spec.type == "email":
        from monitor.notify.email import EmailNotifier

        return EmailNotifier.from_settings(settings, recipients=list(spec.to))
    if spec.type == "webhook":
        from monitor.notify.webhook import WebhookNotifier

        assert spec.url is not None
        return WebhookNotifier(spec.url, timeout=timeout)
    if spec.type == "apprise":
        from monitor.notify.apprise import AppriseNotifier

        assert spec.urls is not None
        return AppriseNotifier(spec.urls)
    from monitor.notify.console import ConsoleNotifier

    return ConsoleNotifier()


def build_notifiers(settings: Settings) -> dict[str, Notifier]:
    """A notifier for every configured destination, by name. With neither Slack nor email set
    up, alerts go to the console, so the daemon is useful out of the box; `console` can also be
    routed to explicitly. A destination that cannot be built is left out, with a log line."""
    from monitor.errors import PermanentFailure
    from monitor.logs import log

    notifiers: dict[str, Notifier] = {}
    for name, destination in settings.configured_destinations().items():
        try:
            notifiers[name] = build_notifier(settings, destination)
        except PermanentFailure as exc:
            log.error("destination not available", destination=name, error=str(exc))
    return notifiers


def default_destinations(notifiers: dict[str, Notifier]) -> tuple[str, ...]:
    """Where a rule without `notify:` sends: every configured destination, else the console."""
    configured = tuple(name for name in notifiers if name != "console")
    return configured or ("console",)
