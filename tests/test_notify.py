"""Notifiers against a local Slack webhook and aiosmtpd, and what each one renders."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from slack_sdk.models.blocks import Block

from conftest import SlackServer, SmtpServer
from monitor.errors import PermanentFailure, RetryLater
from monitor.notify import build_notifiers, default_destinations
from monitor.notify.console import ConsoleNotifier
from monitor.notify.email import EmailNotifier, render_html, render_text, subject
from monitor.notify.message import AlertMessage, RuleHit, Segment, snippet
from monitor.notify.slack import SlackNotifier, escape, render
from monitor.settings import Settings

ALERT = AlertMessage(
    title="Cosco Shipping expands Chancay port", url="https://news.example/a?x=1&y=2",
    source="Andina", published_at=datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
    rules=(RuleHit("cosco", "COSCO Shipping in the news", ("Cosco Shipping",)),
           RuleHit("chancay-port", "Chancay megaport", ("Chancay", "port"))),
    snippet=snippet(["The megaport of Chancay, run by Cosco Shipping, doubles capacity."],
                    ["Cosco Shipping", "Chancay", "port"]))


def test_snippet_highlights_every_term_in_a_window() -> None:
    text = ("Lorem ipsum " * 40) + "the port of Chancay opened. " + ("dolor sit " * 40)
    segments = snippet(["", text], ["Chancay", "port"], width=120)
    assert segments[0] == Segment("…") and segments[-1] == Segment("…")
    assert [s.text for s in segments if s.highlight] == ["port", "Chancay"]
    assert sum(len(s.text) for s in segments) <= 125
    assert snippet(["No terms here."], ["Chancay"]) == (Segment("No terms here."),)
    assert snippet([""], ["x"]) == ()


def test_slack_payload_is_valid_block_kit_with_bold_terms() -> None:
    payload = render(ALERT)
    for block in payload["blocks"]:
        Block.parse(block).validate_json()  # slack_sdk's offline validation
    heading = payload["blocks"][0]["text"]["text"]
    assert heading == "*<https://news.example/a?x=1&amp;y=2|Cosco Shipping expands Chancay port>*"
    assert "Andina · 2026-11-02 09:30 UTC" in payload["blocks"][1]["elements"][0]["text"]
    body = payload["blocks"][2]["text"]["text"]
    assert "*Chancay*" in body and "*Cosco Shipping*" in body
    assert "*port*" not in body  # "megaport" holds no whole word "port"
    matched = payload["blocks"][3]["elements"][0]["text"]
    assert "*COSCO Shipping in the news* (Cosco Shipping)" in matched
    assert "*Chancay megaport* (Chancay, port)" in matched
    assert payload["unfurl_links"] is False


def test_slack_payload_stays_within_limits_for_huge_text() -> None:
    huge = AlertMessage(title="T" * 5000, url="https://x.example/" + "p" * 2000, source="S" * 900,
                        published_at=None, rules=(RuleHit("r", "R" * 3000, ("t",) * 500),),
                        snippet=(Segment("&" * 4000, True),))
    payload = render(huge)
    for block in payload["blocks"]:
        Block.parse(block).validate_json()
        for text in [block.get("text", {}).get("text", "")] + \
                [e["text"] for e in block.get("elements", [])]:
            assert len(text) <= 3000
    assert len(json.dumps(payload)) < 40_000


def test_slack_escaping() -> None:
    assert escape("<!channel> & <http://evil|x>") == "&lt;!channel&gt; &amp; &lt;http://evil|x&gt;"
    assert escape("*bold* _it_ ~s~ `code`") == "∗bold∗ ＿it＿ ∼s∼ ˋcodeˋ"


def send_slack(slack: SlackServer, *responses: tuple) -> None:
    slack.respond(*responses)

    async def go() -> None:
        notifier = SlackNotifier(SecretStr(slack.url), timeout=5)
        try:
            await notifier.send(ALERT)
        finally:
            await notifier.aclose()
    asyncio.run(go())


def test_slack_outcomes(slack: SlackServer) -> None:
    send_slack(slack)
    assert len(slack.received) == 1
    with pytest.raises(RetryLater) as later:
        send_slack(slack, (429, '{"ok":false,"error":"rate_limited"}', {"Retry-After": "7"}))
    assert later.value.after == 7.0
    with pytest.raises(RetryLater, match="500 rollup_error"):
        send_slack(slack, (500, "rollup_error"))
    for status, body in [(403, "invalid_token"), (400, "invalid_payload"), (404, "no_service"),
                         (404, "channel_not_found"), (410, "channel_is_archived")]:
        with pytest.raises(PermanentFailure, match=body) as failure:
            send_slack(slack, (status, body))
        assert slack.url not in str(failure.value)
        assert "s3cr3t" not in str(failure.value)
    assert len(slack.received) == 1


def test_slack_unreachable_is_retried_and_the_url_stays_secret() -> None:
    url = "http://127.0.0.1:9/services/T0/B0/s3cr3t"

    async def go() -> None:
        notifier = SlackNotifier(SecretStr(url), timeout=2)
        try:
            await notifier.send(ALERT)
        finally:
            await notifier.aclose()
    with pytest.raises(RetryLater) as error:
        asyncio.run(go())
    assert "s3cr3t" not in str(error.value)
    assert "s3cr3t" not in repr(SlackNotifier(SecretStr(url)))


def test_a_malformed_webhook_url_is_a_permanent_failure() -> None:
    async def go() -> None:
        notifier = SlackNotifier(SecretStr("http://hooks.example:abc/T/B/s3cr3t"), timeout=2)
        try:
            await notifier.send(ALERT)
        finally:
            await notifier.aclose()
    with pytest.raises(PermanentFailure, match="MONITOR_SLACK_WEBHOOK_URL") as error:
        asyncio.run(go())
    assert "s3cr3t" not in str(error.value)


def test_email_parts_read_well_on_their_own() -> None:
    text = render_text(ALERT)
    assert text.startswith("Cosco Shipping expands Chancay port\n")
    assert "https://news.example/a?x=1&y=2" in text
    assert "*Chancay*" in text and "- Chancay megaport (chancay-port): Chancay, port" in text
    html = render_html(ALERT)
    assert '<a href="https://news.example/a?x=1&amp;y=2"' in html
    assert '<strong style="background:#fff3bf">Chancay</strong>' in html
    assert subject(ALERT) == ("[COSCO Shipping in the news, Chancay megaport] "
                              "Cosco Shipping expands Chancay port")


def email_notifier(smtp: SmtpServer, tls: str = "none", **kwargs: object) -> EmailNotifier:
    return EmailNotifier(host="127.0.0.1", port=smtp.port, tls=tls, sender="monitor@example.org",
                         recipients=["a@example.org", "b@example.org"], timeout=5,
                         **kwargs)  # type: ignore[arg-type]


def test_email_is_multipart_text_and_html(smtp: SmtpServer) -> None:
    asyncio.run(email_notifier(smtp).send(ALERT))
    [message] = smtp.messages
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == "monitor@example.org"
    assert message["To"] == "a@example.org, b@example.org"
    assert message["Message-ID"] and message["Date"]
    plain = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert plain == render_text(ALERT)
    assert "Chancay" in message.get_body(("html",)).get_content()


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_email_over_tls(tls_ca, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:  # noqa: ANN001
    context, ca_file = tls_ca
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    server = SmtpServer(**({"tls_context": context, "require_starttls": True}
                           if mode == "starttls" else {"ssl_context": context}))
    server.start()
    try:
        asyncio.run(email_notifier(server, tls=mode).send(ALERT))
        assert len(server.messages) == 1
    finally:
        server.stop()


def test_email_tls_with_an_untrusted_certificate_is_not_sent(tls_ca) -> None:  # noqa: ANN001
    context, _ = tls_ca
    server = SmtpServer(ssl_context=context)
    server.start()
    try:
        with pytest.raises(RetryLater, match="SMTP"):
            asyncio.run(email_notifier(server, tls="ssl").send(ALERT))
        assert server.messages == []
    finally:
        server.stop()


def test_smtp_replies_decide_retrying(smtp: SmtpServer) -> None:
    class Refusing:
        def __init__(self, code: int):
            self.code = code

        async def handle_RCPT(self, server, session, envelope, address, options):  # noqa
            return f"{self.code} mailbox unavailable"

    for code, kind in [(550, PermanentFailure), (450, RetryLater)]:
        server = SmtpServer()
        server.inbox = Refusing(code)  # type: ignore[assignment]
        server.start()
        try:
            with pytest.raises(kind, match=str(code)):
                asyncio.run(email_notifier(server).send(ALERT))
        finally:
            server.stop()
    smtp.stop()
    with pytest.raises(RetryLater, match="cannot reach"):
        asyncio.run(email_notifier(smtp).send(ALERT))


def test_email_password_stays_secret(smtp: SmtpServer) -> None:
    notifier = email_notifier(smtp, username="u", password=SecretStr("hunter2-secret"))
    assert "hunter2" not in repr(notifier)
    settings = Settings(_env_file=None, smtp_host="h", smtp_password="hunter2-secret",
                        email_from="a@b.c", email_to="d@e.f",
                        slack_webhook_url="https://hooks.slack.com/services/T/B/tok3n")
    assert "hunter2" not in repr(settings) and "tok3n" not in repr(settings)


def test_console_output_is_inert_and_readable() -> None:
    stream = io.StringIO()
    hostile = AlertMessage(title="Cosco \x1b[2J\x1b[31mred", url="https://x.example/a",
                           source="Src\x07", published_at=None,
                           rules=(RuleHit("cosco", "COSCO", ("Cosco",)),),
                           snippet=(Segment("a "), Segment("Cosco", True), Segment("\x1b]0;t")))
    asyncio.run(ConsoleNotifier(stream).send(hostile))
    out = stream.getvalue()
    assert "\x1b" not in out and "\x07" not in out
    assert out.startswith("ALERT Cosco [2J[31mred\n")
    assert "matched COSCO [cosco]: Cosco" in out and "a **Cosco**" in out


def test_destinations_follow_the_settings() -> None:
    bare = build_notifiers(Settings(_env_file=None))
    assert list(bare) == ["console"] and default_destinations(bare) == ("console",)
    full = build_notifiers(Settings(_env_file=None, slack_webhook_url="https://h.example/x",
                                    smtp_host="127.0.0.1", email_from="a@b.c",
                                    email_to="d@e.f,g@h.i"))
    assert default_destinations(full) == ("slack", "email")
    assert full["email"].recipients == ["d@e.f", "g@h.i"]  # type: ignore[attr-defined]
