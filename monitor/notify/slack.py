"""Slack incoming webhook: one Block Kit message per alert.

Feed text is untrusted. In mrkdwn, `&`, `<` and `>` are escaped (so `<!channel>` and
`<http://evil|click>` show as text and ping or link nothing), the formatting characters
`* _ ~ `` ` are replaced by look-alikes (a feed cannot bold, strike or code-format our
message), and every text object is `verbatim` (Slack does not auto-link URLs or names in it).
The webhook URL is a secret: it never appears in an error or a log line.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr
from slack_sdk.models.blocks import ContextBlock, DividerBlock, MarkdownTextObject, SectionBlock

from monitor.errors import PermanentFailure, RetryLater
from monitor.notify.message import AlertMessage

SECTION_LIMIT = 3000
CONTEXT_LIMIT = 2000  # characters per context element, kept well under Slack's limit

# Webhook errors that retrying will not fix (Slack's documented and observed error strings).
PERMANENT_ERRORS = frozenset({
    "invalid_payload", "invalid_token", "no_service", "no_service_id", "no_team",
    "team_disabled", "channel_not_found", "channel_is_archived", "action_prohibited",
    "user_not_found", "no_text", "posting_to_general_channel_denied", "too_many_attachments",
    "missing_text_or_fallback_or_attachments", "msg_blocks_too_long", "invalid_blocks",
})

_LOOKALIKES = str.maketrans({"*": "∗", "_": "\uff3f", "~": "\u223c", "`": "\u02cb"})


def escape(text: str) -> str:
    """Feed text made inert for Slack mrkdwn."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.translate(_LOOKALIKES)


def _link_target(url: str) -> str:
    return (url.replace("&", "&amp;").replace("|", "%7C").replace("<", "%3C")
            .replace(">", "%3E").replace(" ", "%20"))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text, verbatim=True)


def render(alert: AlertMessage) -> dict:
    """The webhook payload for one alert (validated by slack_sdk's block models)."""
    title = escape(_clip(alert.headline, 600))
    heading = f"*<{_link_target(alert.link)}|{title}>*" if alert.link else f"*{title}*"
    meta = escape(_clip(alert.source, 300))
    if alert.when:
        meta += f" · {alert.when}"
    blocks = [SectionBlock(text=_mrkdwn(heading)),
              ContextBlock(elements=[_mrkdwn(meta)])]
    if alert.snippet:
        parts = []
        for segment in alert.snippet:
            text = escape(segment.text)
            parts.append(f"*{text}*" if segment.highlight and text.strip() else text)
        blocks.append(SectionBlock(text=_mrkdwn(_clip("".join(parts), SECTION_LIMIT))))
    matched = "; ".join(
        f"*{escape(rule.name)}*" + (f" ({escape(', '.join(rule.terms))})" if rule.terms else "")
        for rule in alert.rules)
    blocks.append(ContextBlock(elements=[_mrkdwn(_clip("Matched " + matched, CONTEXT_LIMIT))]))
    if alert.also:
        blocks.append(ContextBlock(elements=[_mrkdwn(escape(_clip(alert.also_line,
                                                                   CONTEXT_LIMIT)))]))
    blocks.append(DividerBlock())
    rule_names = ", ".join(rule.name for rule in alert.rules)
    return {
        "text": escape(_clip(f"{alert.headline} [{rule_names}]", 1000)),
        "blocks": [block.to_dict() for block in blocks],
        "unfurl_links": False,
        "unfurl_media": False,
    }


class SlackNotifier:
    name = "slack"

    def __init__(self, webhook_url: SecretStr, *, timeout: float = 20.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self._url = webhook_url
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport,
                                         follow_redirects=False)

    def __repr__(self) -> str:
        return "SlackNotifier(webhook_url=**********)"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, alert: AlertMessage) -> None:
        await self.post(render(alert))

    async def post(self, payload: dict) -> None:
        try:
            response = await self._client.post(self._url.get_secret_value(), json=payload)
        except httpx.TimeoutException:
            raise RetryLater("Slack did not answer in time") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise PermanentFailure("the Slack webhook URL is not a valid URL "
                                   "(check MONITOR_SLACK_WEBHOOK_URL)") from None
        except httpx.TransportError as exc:
            raise RetryLater(f"cannot reach Slack ({type(exc).__name__})") from None
        body = response.text.strip()[:200]
        status = response.status_code
        if status == 200:
            return
        if status == 429:
            raise RetryLater(f"Slack is rate limiting (429 {body})",
                             after=_seconds(response.headers.get("Retry-After")))
        if status >= 500 or status == 408:
            raise RetryLater(f"Slack answered {status} {body}")
        if body in PERMANENT_ERRORS or 400 <= status < 500:
            raise PermanentFailure(f"Slack refused the message: {status} {body}")
        raise RetryLater(f"Slack answered {status} {body}")


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
