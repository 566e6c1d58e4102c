"""Email over SMTP with aiosmtplib: one multipart message (plain text + HTML) per alert, or
per group of alerts (a digest, or a burst), listed under their rules.

Feed text is HTML-escaped in the HTML part and only http(s) links are linked, so a feed cannot
script or restyle the mail. Header values are single-line. The SMTP password is a secret: it
never appears in an error or a log line. SMTP replies decide retrying: 4xx means later, 5xx
means never.
"""

from __future__ import annotations

import html
import socket
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib
from pydantic import SecretStr

from monitor.errors import PermanentFailure, RetryLater
from monitor.notify.message import AlertGroup, AlertMessage
from monitor.settings import Settings

SUBJECT_LIMIT = 200


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _subject(rules: str, what: str) -> str:
    text = _one_line(f"[{rules}] {what}")
    return text if len(text) <= SUBJECT_LIMIT else text[:SUBJECT_LIMIT - 1] + "…"


def subject(alert: AlertMessage) -> str:
    return _subject(", ".join(rule.name for rule in alert.rules), alert.headline)


def render_text(alert: AlertMessage) -> str:
    lines = [alert.headline, ""]
    meta = alert.source + (f" · {alert.when}" if alert.when else "")
    lines.append(meta)
    if alert.link:
        lines.append(alert.link)
    if alert.snippet:
        lines += ["", "".join(f"*{s.text}*" if s.highlight else s.text for s in alert.snippet)]
    if alert.also:
        lines += ["", alert.also_line]
    lines += ["", "Why you got this:"]
    for rule in alert.rules:
        terms = ", ".join(rule.terms)
        lines.append(f"- {rule.name} ({rule.id})" + (f": {terms}" if terms else ""))
    return "\n".join(lines) + "\n"


def _html_parts(alert: AlertMessage) -> tuple[str, str, str]:
    """The alert's linked title, its source and date line, and its highlighted snippet, as
    escaped HTML."""
    e = html.escape
    title = e(alert.headline)
    if alert.link:
        title = f'<a href="{e(alert.link, quote=True)}" style="color:#1a5fb4">{title}</a>'
    meta = e(alert.source) + (f" &middot; {e(alert.when)}" if alert.when else "")
    snippet = "".join(
        f'<strong style="background:#fff3bf">{e(s.text)}</strong>' if s.highlight else e(s.text)
        for s in alert.snippet)
    return title, meta, snippet


def render_html(alert: AlertMessage) -> str:
    e = html.escape
    title, meta, snippet = _html_parts(alert)
    snippet = snippet.replace("\n", "<br>")
    rules = "".join(
        f"<li><strong>{e(rule.name)}</strong> <span style=\"color:#666\">({e(rule.id)})</span>"
        + (f": {e(', '.join(rule.terms))}" if rule.terms else "") + "</li>"
        for rule in alert.rules)
    also = (f'<p style="color:#666;font-size:13px;margin:0 0 12px">{e(alert.also_line)}</p>\n'
            if alert.also else "")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{e(subject(alert))}</title></head>
<body style="font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:15px;\
line-height:1.5;color:#222;max-width:640px;margin:0 auto;padding:16px">
<h2 style="font-size:19px;margin:0 0 4px">{title}</h2>
<p style="color:#666;font-size:13px;margin:0 0 12px">{meta}</p>
<p style="margin:0 0 16px">{snippet}</p>
{also}<p style="font-size:13px;color:#444;margin:0">Why you got this:</p>
<ul style="font-size:13px;color:#444;margin:4px 0 0">{rules}</ul>
</body></html>
"""


def group_subject(group: AlertGroup) -> str:
    return _subject(group.rule_names, group.title)


def render_group_text(group: AlertGroup) -> str:
    lines = [group.title, "=" * len(group.title)]
    for rule, alerts in group.by_rule():
        heading = f"{rule.name} ({len(alerts)})"
        lines += ["", heading, "-" * len(heading)]
        for alert in alerts:
            lines.append(f"* {alert.headline}")
            lines.append(f"  {alert.source}" + (f" · {alert.when}" if alert.when else ""))
            if alert.link:
                lines.append(f"  {alert.link}")
            if alert.snippet:
                lines.append("  " + " ".join("".join(
                    f"*{s.text}*" if s.highlight else s.text for s in alert.snippet).split()))
    return "\n".join(lines) + "\n"


def _alert_html(alert: AlertMessage) -> str:
    title, meta, snippet = _html_parts(alert)
    return (f'<li style="margin:0 0 12px"><strong>{title}</strong><br>'
            f'<span style="color:#666;font-size:13px">{meta}</span>'
            + (f'<br><span style="font-size:14px">{snippet}</span>' if snippet else "")
            + "</li>")


def render_group_html(group: AlertGroup) -> str:
    e = html.escape
    sections = "".join(
        f'<h3 style="font-size:16px;margin:20px 0 8px;border-bottom:1px solid #ddd;'
        f'padding-bottom:4px">{e(rule.name)} <span style="color:#666;font-weight:normal">'
        f'({len(alerts)})</span></h3>\n<ul style="padding-left:18px;margin:0">'
        + "".join(_alert_html(a) for a in alerts) + "</ul>\n"
        for rule, alerts in group.by_rule())
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{e(group_subject(group))}</title></head>
<body style="font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:15px;\
line-height:1.5;color:#222;max-width:640px;margin:0 auto;padding:16px">
<h2 style="font-size:19px;margin:0 0 4px">{e(group.title)}</h2>
{sections}</body></html>
"""


class EmailNotifier:
    name = "email"
    group_limit = 500

    def __init__(self, *, host: str, port: int, tls: str, sender: str, recipients: list[str],
                 username: str | None = None, password: SecretStr | None = None,
                 timeout: float = 20.0):
        self.host = host
        self.port = port
        self.tls = tls
        self.sender = sender
        self.recipients = recipients
        self.username = username
        self._password = password
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings,
                      recipients: list[str] | None = None) -> EmailNotifier:
        assert settings.smtp_host and settings.email_from
        return cls(host=settings.smtp_host, port=settings.smtp_port, tls=settings.smtp_tls,
                   sender=settings.email_from,
                   recipients=list(recipients or settings.email_to),
                   username=settings.smtp_username, password=settings.smtp_password,
                   timeout=settings.notify_timeout.total_seconds())

    def __repr__(self) -> str:
        return f"EmailNotifier(host={self.host!r}, port={self.port}, password=**********)"

    async def aclose(self) -> None:
        return None

    def message(self, alert: AlertMessage) -> EmailMessage:
        return self._message(subject(alert), render_text(alert), render_html(alert))

    def group_message(self, group: AlertGroup) -> EmailMessage:
        return self._message(group_subject(group), render_group_text(group),
                             render_group_html(group))

    def _message(self, subject_line: str, text: str, html_part: str) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = subject_line
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Date"] = formatdate(localtime=False)
        domain = self.sender.rpartition("@")[2] or socket.getfqdn()
        message["Message-ID"] = make_msgid(domain=domain)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        message.add_alternative(html_part, subtype="html")
        return message

    async def send(self, alert: AlertMessage, *, reply_to: str | None = None) -> None:
        await self.deliver(self.message(alert))

    async def send_group(self, group: AlertGroup) -> None:
        await self.deliver(self.group_message(group))

    async def deliver(self, message: EmailMessage) -> None:
        try:
            refused, _ = await aiosmtplib.send(
                message, hostname=self.host, port=self.port, username=self.username,
                password=self._password.get_secret_value() if self._password else None,
                use_tls=self.tls == "ssl", start_tls=True if self.tls == "starttls" else False,
                timeout=self.timeout)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            reason = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            if all(500 <= code < 600 for code in codes):
                raise PermanentFailure(f"SMTP refused every recipient: {reason}") from None
            raise RetryLater(f"SMTP refused the recipients for now: {reason}") from None
        except aiosmtplib.SMTPResponseException as exc:
            reason = f"SMTP {exc.code} {exc.message}"
            if 500 <= exc.code < 600:
                raise PermanentFailure(reason) from None
            raise RetryLater(reason) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RetryLater(f"cannot reach the SMTP server {self.host}:{self.port} "
                             f"({type(exc).__name__})") from None
        if refused:
            # Some recipients took it; sending again would duplicate it for them.
            raise PermanentFailure("SMTP refused some recipients: " + "; ".join(
                f"{addr}: {resp.code} {resp.message}" for addr, resp in refused.items()))
