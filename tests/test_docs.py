"""Docs are part of the product: these fail when a setting or command goes undocumented."""

from __future__ import annotations

import re

from conftest import REPO
from monitor.settings import Settings

ENV_EXAMPLE = (REPO / ".env.example").read_text(encoding="utf-8")
README = (REPO / "README.md").read_text(encoding="utf-8")
CONTRACT = ["MONITOR_DATABASE_URL", "MONITOR_RULES_DIR", "MONITOR_SLACK_WEBHOOK_URL",
            "MONITOR_SMTP_HOST", "MONITOR_SMTP_PORT", "MONITOR_SMTP_USERNAME",
            "MONITOR_SMTP_PASSWORD", "MONITOR_SMTP_TLS", "MONITOR_EMAIL_FROM", "MONITOR_EMAIL_TO",
            "MONITOR_FIRST_POLL_LOOKBACK"]


def test_every_setting_is_in_env_example_and_nothing_else() -> None:
    documented = set(re.findall(r"^(MONITOR_[A-Z_]+)=", ENV_EXAMPLE, flags=re.M))
    settings = {f"MONITOR_{name.upper()}" for name in Settings.model_fields}
    assert documented == settings


def test_the_contract_names_are_settings() -> None:
    settings = {f"MONITOR_{name.upper()}" for name in Settings.model_fields}
    assert set(CONTRACT) <= settings
    for name in CONTRACT:
        assert name in README


def test_env_example_values_are_valid_settings(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    for key in list(__import__("os").environ):
        if key.startswith("MONITOR_"):
            monkeypatch.delenv(key)
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE, encoding="utf-8")
    settings = Settings(_env_file=env_file)
    assert settings == Settings(_env_file=None)  # the example shows the defaults


def test_readme_documents_every_command_and_ci_runs_its_commands() -> None:
    for command in ("monitor run", "monitor run --once", "monitor rules check",
                    "monitor stories"):
        assert f"`{command}`" in README
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert ".venv/bin/pip install -e '.[test]'" in README
    assert ".venv/bin/pip install --quiet -e '.[test]'" in ci
    assert ".venv/bin/python -m pytest" in README and ".venv/bin/python -m pytest" in ci


def test_changelog_has_an_entry_for_this_version() -> None:
    from monitor import __version__

    assert f"## {__version__}" in (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
