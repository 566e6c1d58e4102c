"""Loading the rules directory: strict validation, every problem at once, file:line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import REPO, Workspace
from monitor.errors import RulesError
from monitor.rules import load_rules

FEEDS = "feeds:\n  - url: https://example.org/rss\n"


def make(tmp_path: Path, **files: str) -> Path:
    (tmp_path / "feeds.yaml").write_text(FEEDS, encoding="utf-8")
    for name, text in files.items():
        (tmp_path / name.replace("_", ".")).write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def problems(path: Path) -> list[str]:
    with pytest.raises(RulesError) as error:
        load_rules(path, destinations={"slack", "email", "console"})
    return [str(p) for p in error.value.problems]


def test_shipped_rules_load() -> None:
    ruleset = load_rules(REPO / "rules")
    assert {r.id for r in ruleset.rules} >= {"chancay-port", "cosco", "peru-china-fta",
                                               "southcom"}


def test_every_problem_in_every_file_is_reported_at_once(tmp_path: Path) -> None:
    make(tmp_path, entities_yaml="""\
        entities:
          cosco:
            name: COSCO
            aliases: [COSCO Shipping]
          cosco:
            name: again
            aliases: [x]
        """, a_yaml="""\
        rules:
          - id: r1
            query: 'port AND (chancay'
          - id: r2
            query: '@nope OR x'
          - id: r1
            query: 'port'
          - id: r3
            query: '-costco'
          - id: Bad Id
            query: 'x'
          - id: r4
            query: 'x'
            notify: [pager]
          - id: r5
            query: 'x'
            colour: red
        """, b_yaml="rule:\n  - id: x\n", c_yaml="rules:\n - id: [\n")
    found = problems(tmp_path)
    base = str(tmp_path)
    assert f"{base}/a.yaml:3:22: rule 'r1': unbalanced '(': a closing ')' is missing" in found
    assert f"{base}/a.yaml:5:13: rule 'r2': unknown entity @nope" in found
    assert any(p.startswith(f"{base}/a.yaml:6:") and "duplicate rule id 'r1'" in p
               for p in found)
    assert any(p.startswith(f"{base}/a.yaml:9:12:") and "only negative" in p for p in found)
    assert any(p.startswith(f"{base}/a.yaml:10:9:") and "rules.4.id" in p
               and "lowercase letters" in p for p in found)
    assert f"{base}/a.yaml:14:14: rule 'r4': unknown destination 'pager' (configured: " \
        "console, email, slack)" in found
    assert any(p.startswith(f"{base}/a.yaml:") and "unknown key 'colour'" in p for p in found)
    assert any(p.startswith(f"{base}/b.yaml:") and "unknown key 'rule'" in p for p in found)
    assert any(p.startswith(f"{base}/c.yaml:3:") and "invalid YAML" in p for p in found)
    assert f"{base}/entities.yaml:5:3: duplicate key 'cosco' (first at line 2)" in found


def test_yaml_1_1_booleans_stay_strings(tmp_path: Path) -> None:
    make(tmp_path, entities_yaml="""\
        entities:
          norway:
            name: Norway
            aliases: [NO, Norway, on, y]
        """, r_yaml="rules:\n  - id: n\n    query: '@norway'\n")
    ruleset = load_rules(tmp_path)
    assert [t.text for t in ruleset.entities["norway"].terms] == ["NO", "Norway", "on", "y"]


def test_entity_lists_hold_plain_words_and_phrases(tmp_path: Path) -> None:
    make(tmp_path, entities_yaml="""\
        entities:
          fta:
            name: FTA
            aliases: ["=FTA", "port*", free trade]
        """)
    found = problems(tmp_path)
    assert len(found) == 2 and all("entity lists hold plain words" in p for p in found)


def test_non_strings_must_be_quoted(tmp_path: Path) -> None:
    make(tmp_path, entities_yaml="""\
        entities:
          year:
            name: Year
            aliases: [2024, true]
        """)
    found = problems(tmp_path)
    assert any(":4:" in p and "entities.year.aliases.0" in p and "quote it" in p for p in found)
    assert any("entities.year.aliases.1" in p for p in found)


def test_feeds_are_validated(tmp_path: Path) -> None:
    (tmp_path / "feeds.yaml").write_text(textwrap.dedent("""\
        feeds:
          - url: ftp://example.org/feed
          - url: https://example.org/a
            interval: soon
          - url: https://example.org/a
          - url: https://example.org/b
            intervl: 10m
          - url: https://example.org/c
            interval: 5s
        """), encoding="utf-8")
    found = problems(tmp_path)
    assert any(":2:" in p and "not an http(s) URL" in p for p in found)
    assert any(":4:" in p and "not a duration" in p for p in found)
    assert any(":5:" in p and "duplicate feed" in p for p in found)
    assert any(":7:" in p and "unknown key 'intervl'" in p for p in found)
    assert any(":9:" in p and "at least 30s" in p for p in found)


def test_missing_directory_and_feeds_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope") == [f"{tmp_path / 'nope'}: no such rules directory"]
    assert any("feeds.yaml: missing" in p for p in problems(tmp_path))


def test_block_queries_point_at_the_line_and_column_in_the_file(tmp_path: Path) -> None:
    make(tmp_path, r_yaml="""\
        rules:
          - id: long
            query: >-
              cosco OR
              (chancay AND
          - id: entity
            query: |
              cosco
              OR @ghost
        """)
    found = problems(tmp_path)
    assert found == [
        f"{tmp_path}/r.yaml:5:19: rule 'long': the query ends where a term was expected",
        f"{tmp_path}/r.yaml:9:10: rule 'entity': unknown entity @ghost",
    ]


def test_rules_check_command(workspace: Workspace) -> None:
    workspace.write_feeds("https://example.org/rss")
    ok = workspace.run("rules", "check")
    assert ok.returncode == 0 and "OK" in ok.stdout and "2 rules" in ok.stdout
    workspace.write("bad.yaml", "rules:\n  - id: bad\n    query: 'a AND'\n")
    workspace.write("worse.yaml", "rules:\n  - id: worse\n    query: '@ghost'\n")
    bad = workspace.run("rules", "check")
    assert bad.returncode != 0
    assert "bad.yaml:3:" in bad.stderr and "worse.yaml:3:" in bad.stderr
    assert "2 problem(s)" in bad.stderr
    shipped = workspace.run("rules", "check", "--rules-dir", str(REPO / "rules"))
    assert shipped.returncode == 0, shipped.stderr


def test_rules_can_be_switched_off_and_scoped_to_feeds_and_tags(tmp_path: Path) -> None:
    from monitor.match import Document, match

    (tmp_path / "feeds.yaml").write_text(textwrap.dedent("""\
        feeds:
          - url: https://andina.example/rss
            name: Andina
            tags: [peru, es]
          - url: https://other.example/rss
            tags: [chile]
        """), encoding="utf-8")
    make_rules = """\
        rules:
          - id: off
            query: 'cosco'
            enabled: false
          - id: by-tag
            query: 'tlc'
            tags: [peru]
          - id: by-feed
            query: 'cosco'
            feeds: [Andina, https://other.example/rss]
        """
    (tmp_path / "r.yaml").write_text(textwrap.dedent(make_rules), encoding="utf-8")
    ruleset = load_rules(tmp_path)
    assert [r.id for r in ruleset.rules] == ["by-tag", "by-feed"]

    def ids(**doc: object) -> list[str]:
        return [m.rule_id for m in match(Document(**doc), ruleset.rules)]  # type: ignore[arg-type]

    assert ids(title="TLC y Cosco", tags=("peru",), source="Andina",
               feed="https://andina.example/rss") == ["by-tag", "by-feed"]
    assert ids(title="TLC y Cosco", tags=("chile",), source="",
               feed="https://other.example/rss") == ["by-feed"]
    assert ids(title="TLC y Cosco", tags=(), source="Elsewhere", feed="https://x.example/") == []

    (tmp_path / "r.yaml").write_text(textwrap.dedent("""\
        rules:
          - id: bad-scope
            query: 'x'
            feeds: [Nowhere]
            tags: [mars]
        """), encoding="utf-8")
    found = problems(tmp_path)
    assert any("no feed 'Nowhere' in feeds.yaml" in p for p in found)
    assert any("no feed in feeds.yaml has the tag 'mars'" in p for p in found)
