"""Slack: an incoming webhook, or bot mode (a bot token and a channel, `chat.postMessage`),
where later copies of a story go as thread replies under its first alert.

Feed text is untrusted. In mrkdwn, `&`, `<` and `>` are escaped (so `<!channel>` and
`<http://evil|click>` show as text and ping or link nothing), the formatting characters
`* _ ~ `` ` are replaced by look-alikes (a feed cannot bold, strike or code-format our
message), and every text object is `verbatim` (Slack does not auto-link URLs or names in it).
Payloads are built from slack_sdk's block models, which check Slack's limits offline, and are
kept within them (50 blocks, 3,000 characters a section, 150 a header) by clipping feed text.
Tokens and webhook URLs are secrets: they never appear in an error or a log line.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr
from slack_sdk.models.blocks import Block, ContextBlock, DividerBlock, HeaderBlock, \
    MarkdownTextObject, SectionBlock

from monitor.errors import PermanentFailure, RetryLater
from monitor.notify.message import AlertGroup, AlertMessage

SECTION_LIMIT = 3000
HEADER_LIMIT = 150
BLOCK_LIMIT = 50
CONTEXT_LIMIT = 2000  # characters per context element, kept well under Slack's limit
GROUP_LIMIT = 40  # alerts in one grouped message: one section each at worst, under 50 blocks

# Webhook errors that retrying will not fix (Slack's documented and observed error strings).
PERMANENT_ERRORS = frozenset({
    "invalid_payload", "invalid_token", "no_service", "no_service_id", "no_team",
    "team_disabled", "channel_not_found", "channel_is_archived", "action_prohibited",
    "user_not_found", "no_text", "posting_to_general_channel_denied", "too_many_attachments",
    "missing_text_or_fallback_or_attachments", "msg_blocks_too_long", "invalid_blocks",
})
# chat.postMessage errors that retrying will not fix (Web API `error` strings).
PERMANENT_API_ERRORS = PERMANENT_ERRORS | frozenset({
    "not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired",
    "no_permission", "missing_scope", "not_allowed_token_type", "is_archived", "not_in_channel",
    "msg_too_long", "invalid_arg_name", "invalid_array_arg", "invalid_charset",
    "invalid_form_data", "invalid_post_type", "missing_post_type", "restricted_action",
    "ekm_access_denied", "team_access_not_granted", "invalid_arguments", "invalid_metadata_format",
    "as_user_not_supported", "duplicate_channel_not_found", "channel_is_archived",
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


def _heading(alert: AlertMessage, limit: int = 600) -> str:
    title = escape(_clip(alert.headline, limit))
    return f"*<{_link_target(alert.link)}|{title}>*" if alert.link else f"*{title}*"


def _meta(alert: AlertMessage) -> str:
    meta = escape(_clip(alert.source, 300))
    return meta + (f" · {alert.when}" if alert.when else "")


def _payload(text: str, blocks: list[Block]) -> dict:
    assert len(blocks) <= BLOCK_LIMIT
    return {"text": escape(_clip(text, 1000)),
            "blocks": [block.to_dict() for block in blocks],  # to_dict() validates
            "unfurl_links": False, "unfurl_media": False}


def render(alert: AlertMessage) -> dict:
    """The payload for one alert."""
    blocks: list[Block] = [SectionBlock(text=_mrkdwn(_heading(alert))),
                           ContextBlock(elements=[_mrkdwn(_meta(alert))])]
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
    return _payload(f"{alert.headline} [{rule_names}]", blocks)


def render_reply(alert: AlertMessage) -> dict:
    """A later copy of a story, as a reply in the thread of its first alert."""
    blocks: list[Block] = [SectionBlock(text=_mrkdwn(
        _clip(f"Also reported by {_meta(alert)}: {_heading(alert, 300)}", SECTION_LIMIT)))]
    return _payload(f"Also reported by {alert.source}: {alert.headline}", blocks)


def render_group(group: AlertGroup) -> dict:
    """Several alerts in one message, under their rules. Each alert is one line; lines fill
    sections of at most 3,000 characters, so `GROUP_LIMIT` alerts stay under 50 blocks."""
    if len(group.alerts) > GROUP_LIMIT:
        raise ValueError(f"a Slack group holds at most {GROUP_LIMIT} alerts")
    blocks: list[Block] = [HeaderBlock(text=_clip(group.title, HEADER_LIMIT))]
    for rule, alerts in group.by_rule():
        text = f"*{escape(_clip(rule.name, 200))}* ({len(alerts)})"
        for alert in alerts:
            line = f"\n• {_heading(alert, 300)} — {_meta(alert)}"
            if len(text) + len(line) > SECTION_LIMIT:
                blocks.append(SectionBlock(text=_mrkdwn(text)))
                text = line.lstrip("\n")
            else:
                text += line
        blocks.append(SectionBlock(text=_mrkdwn(text)))
    blocks.append(DividerBlock())
    return _payload(f"{group.title} [{group.rule_names}]", blocks)


def _error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.text.strip()[:200]


class _SlackBase:
    group_limit = GROUP_LIMIT

    def __init__(self, *, timeout: float, transport: httpx.AsyncBaseTransport | None):
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport,
                                         follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, alert: AlertMessage, *, reply_to: str | None = None) -> str | None:
        return await self.post(render_reply(alert) if reply_to else render(alert),
                               reply_to=reply_to)

    async def send_group(self, group: AlertGroup) -> str | None:
        return await self.post(render_group(group))

    async def post(self, payload: dict, *, reply_to: str | None = None) -> str | None:
        raise NotImplementedError

    async def _request(self, url: str, payload: dict, headers: dict[str, str],
                       what: str) -> httpx.Response:
        try:
            response = await self._client.post(url, json=payload, headers=headers)
        except httpx.TimeoutException:
            raise RetryLater("Slack did not answer in time") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise PermanentFailure(f"the Slack {what} is not a valid URL") from None
        except httpx.TransportError as exc:
            raise RetryLater(f"cannot reach Slack ({type(exc).__name__})") from None
        status, body = _error(response)
        if status == 429:
            raise RetryLater(f"Slack is rate limiting (429 {body})",
                             after=_seconds(response.headers.get("Retry-After")))
        if status >= 500 or status == 408:
            raise RetryLater(f"Slack answered {status} {body}")
        return response


class SlackNotifier(_SlackBase):
    """An incoming webhook: one channel, no threads."""

    name = "slack"

    def __init__(self, webhook_url: SecretStr, *, timeout: float = 20.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(timeout=timeout, transport=transport)
        self._url = webhook_url

    def __repr__(self) -> str:
        return "SlackNotifier(webhook_url=**********)"

    async def post(self, payload: dict, *, reply_to: str | None = None) -> str | None:
        response = await self._request(
            self._url.get_secret_value(), payload, {},
            "webhook URL (check MONITOR_SLACK_WEBHOOK_URL, or the destination's webhook_url)")
        status, body = _error(response)
        if status == 200:
            return None
        if body in PERMANENT_ERRORS or 400 <= status < 500:
            raise PermanentFailure(f"Slack refused the message: {status} {body}")
        raise RetryLater(f"Slack answered {status} {body}")


class SlackBotNotifier(_SlackBase):
    """Bot mode: `chat.postMessage` to a channel. Returns "channel:ts" of each message, so
    that later copies of a story can reply in its thread."""

    name = "slack"

    def __init__(self, token: SecretStr, channel: str, *, api_url: str = "https://slack.com/api",
                 timeout: float = 20.0, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(timeout=timeout, transport=transport)
        self._token = token
        self.channel = channel
        self._endpoint = api_url.rstrip("/") + "/chat.postMessage"

    def __repr__(self) -> str:
        return f"SlackBotNotifier(channel={self.channel!r}, token=**********)"

    async def post(self, payload: dict, *, reply_to: str | None = None) -> str | None:
        payload = {**payload, "channel": self.channel}
        if reply_to:
            channel, _, ts = reply_to.partition(":")
            payload.update(channel=channel or self.channel, thread_ts=ts)
        response = await self._request(
            self._endpoint, payload,
            {"Authorization": f"Bearer {self._token.get_secret_value()}"},
            "API URL (check MONITOR_SLACK_API_URL, or the destination's api_url)")
        status, body = _error(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            if 400 <= status < 500:
                raise PermanentFailure(f"Slack refused the message: {status} {body}")
            raise RetryLater(f"Slack answered {status} with no JSON: {body}")
        if answer.get("ok") is True:
            return f"{answer.get('channel') or payload['channel']}:{answer.get('ts', '')}"
        error = str(answer.get("error") or f"HTTP {status}")
        if error in ("ratelimited", "rate_limited"):
            raise RetryLater(f"Slack is rate limiting ({error})",
                             after=_seconds(response.headers.get("Retry-After")))
        if error in PERMANENT_API_ERRORS:
            raise PermanentFailure(f"Slack refused the message: {error}")
        raise RetryLater(f"Slack answered {status} {error}")


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
