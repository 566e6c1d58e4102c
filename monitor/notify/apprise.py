"""Apprise (an optional extra: `pip install monitor[apprise]`) for the services people ask
for: Teams, Discord, Telegram, ntfy and a hundred more, each named by an Apprise URL.

Apprise reports only "all delivered" or not, with no reason and no way to tell a bad token
from an outage, so a failure is retried later and its log lines are the place to look. A
message that reached some of several URLs and not others is sent again to all of them: list
one URL per destination when that matters. The URLs hold tokens: they never appear in errors.
"""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from monitor.errors import PermanentFailure, RetryLater
from monitor.notify import email
from monitor.notify.message import AlertGroup, AlertMessage


class AppriseNotifier:
    name = "apprise"
    group_limit = 100

    def __init__(self, urls: SecretStr):
        try:
            import apprise
        except ImportError:
            raise PermanentFailure("the apprise destination needs the extra: "
                                   "pip install 'monitor[apprise]'") from None
        self._apprise = apprise
        self._target = apprise.Apprise()
        bad = [i + 1 for i, url in enumerate(urls.get_secret_value().split(","))
               if url.strip() and not self._target.add(url.strip())]
        if bad or not len(self._target):
            raise PermanentFailure(f"apprise does not understand URL number "
                                   f"{', '.join(map(str, bad)) or '1'} of the destination")

    def __repr__(self) -> str:
        return f"AppriseNotifier(urls={len(self._target)} **********)"

    async def aclose(self) -> None:
        return None

    async def send(self, alert: AlertMessage, *, reply_to: str | None = None) -> None:
        await self._notify(email.subject(alert), email.render_text(alert))

    async def send_group(self, group: AlertGroup) -> None:
        await self._notify(email.group_subject(group), email.render_group_text(group))

    async def _notify(self, title: str, body: str) -> None:
        # Plain text: each service escapes (or does not render) it its own way.
        delivered = await asyncio.to_thread(
            self._target.notify, body=body, title=title,
            body_format=self._apprise.NotifyFormat.TEXT)
        if not delivered:
            raise RetryLater("apprise could not deliver to every URL (see apprise's log)")
