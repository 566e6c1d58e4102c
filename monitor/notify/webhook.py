"""A generic JSON webhook: one POST per message, for whatever a team runs in-house.

The body is JSON (`{"kind": "alert" | "group", "title": …, "alerts": [...]}`), so feed text
reaches the receiver as JSON strings; escaping it for display is the receiver's job. The URL is
a secret (it often carries a token): it never appears in an error or a log line. 2xx is sent;
408, 429 and 5xx are retried later (honouring Retry-After); any other answer is permanent.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from monitor.errors import PermanentFailure, RetryLater
from monitor.notify.message import AlertGroup, AlertMessage
from monitor.notify.slack import _seconds


def alert_json(alert: AlertMessage) -> dict[str, Any]:
    return {
        "title": alert.headline,
        "url": alert.link,
        "source": alert.source,
        "published_at": alert.published_at.isoformat() if alert.published_at else None,
        "rules": [{"id": r.id, "name": r.name, "terms": list(r.terms)} for r in alert.rules],
        "snippet": "".join(s.text for s in alert.snippet),
        "highlights": [s.text for s in alert.snippet if s.highlight],
        "also_reported_by": list(alert.also),
    }


class WebhookNotifier:
    name = "webhook"
    group_limit = 200

    def __init__(self, url: SecretStr, *, timeout: float = 20.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport,
                                         follow_redirects=False,
                                         headers={"User-Agent": "monitor (alerts)"})

    def __repr__(self) -> str:
        return "WebhookNotifier(url=**********)"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, alert: AlertMessage, *, reply_to: str | None = None) -> None:
        await self.post({"kind": "alert", "title": alert.headline,
                         "alerts": [alert_json(alert)]})

    async def send_group(self, group: AlertGroup) -> None:
        await self.post({"kind": "group", "title": group.title, "digest": group.digest,
                         "alerts": [alert_json(a) for a in group.alerts]})

    async def post(self, payload: dict[str, Any]) -> None:
        try:
            response = await self._client.post(self._url.get_secret_value(), json=payload)
        except httpx.TimeoutException:
            raise RetryLater("the webhook did not answer in time") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise PermanentFailure("the webhook URL is not a valid URL") from None
        except httpx.TransportError as exc:
            raise RetryLater(f"cannot reach the webhook ({type(exc).__name__})") from None
        status = response.status_code
        body = response.text.strip()[:200]
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500:
            raise RetryLater(f"the webhook answered {status} {body}".rstrip(),
                             after=_seconds(response.headers.get("Retry-After")))
        raise PermanentFailure(f"the webhook refused the message: {status} {body}".rstrip())
