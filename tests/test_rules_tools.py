"""`monitor rules test`, `rules check` with carets, and the JSON Schema of rule files."""

from __future__ import annotations

import json
import sqlite3

import yaml
from jsonschema import Draft202012Validator

from conftest import REPO, FeedServer, Workspace, hours_ago, rss
from monitor.rules import json_schema

ITEMS = [
    {"id": "a", "title": "Cosco Shipping expands Chancay port"},
    {"id": "b", "summary": "Costco opens a warehouse in Lima"},
    {"id": "c", "content": "中远海运在钱凯港", "lang": "zh"},
]


def jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items)


def test_rules_test_reads_json_lines_and_explains(workspace: Workspace) -> None:
    workspace.write_feeds("https://example.org/rss")
    result = workspace.run("rules", "test", input_text=jsonl(ITEMS))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["id"] for line in lines] == ["a", "b", "c"]
    assert lines[0]["rules"] == ["cosco", "chancay-port"]
    # The workspace's rule: '@cosco OR (cosco AND (port OR puerto OR shipping OR naviera))'
    assert lines[0]["terms"]["cosco"] == ["COSCO Shipping", "cosco", "port", "shipping"]
    assert ["COSCO Shipping", "title"] in lines[0]["where"]["cosco"]
    assert lines[1] == {"id": "b", "rules": [], "terms": {}, "where": {}}
    assert set(lines[2]["rules"]) == {"cosco", "chancay-port"}
    assert "3 items, 2 matched" in result.stderr


def test_rules_test_reports_bad_lines_and_goes_on(workspace: Workspace, tmp_path) -> None:  # noqa: ANN001
    workspace.write_feeds("https://example.org/rss")
    path = tmp_path / "items.jsonl"
    path.write_text(jsonl(ITEMS[:1]) + "{oops\n" + '{"id": 2}\n' + '{"id": 3, "colour": 1}\n'
                    + '{"id": 4, "title": "peru", "tags": 5}\n', encoding="utf-8")
    result = workspace.run("rules", "test", str(path))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1
    assert f"{path}:2: invalid JSON" in result.stderr
    assert f"{path}:3: an item needs an `id`" in result.stderr
    assert f"{path}:4: unknown field(s) colour" in result.stderr
    assert f"{path}:5: tags must be a string or a list of strings" in result.stderr


def test_rules_test_against_a_live_feed_and_a_backtest(workspace: Workspace,
                                                      feeds: FeedServer) -> None:
    items = [{"guid": "g1", "title": "Cosco Shipping expands Chancay port",
              "date": hours_ago(1), "link": "https://news.example/g1-story"},
             {"guid": "g2", "title": "Costco in Lima", "date": hours_ago(1)}]
    url = feeds.set("/news.xml", rss(items))
    workspace.write_feeds(url)
    live = workspace.run("rules", "test", "--feed", url)
    assert live.returncode == 0, live.stderr
    lines = [json.loads(line) for line in live.stdout.splitlines()]
    assert [(line["id"], line["rules"]) for line in lines] == [
        ("g1", ["cosco", "chancay-port"]), ("g2", [])]

    workspace.run("run", "--once", check=True)
    # A new rule, backtested over what the store saw: nothing is sent.
    workspace.write("more.yaml", "rules:\n  - id: lima\n    query: 'lima'\n")
    back = workspace.run("rules", "test", "--since", "7d")
    assert back.returncode == 0, back.stderr
    lines = [json.loads(line) for line in back.stdout.splitlines()]
    assert [(line["id"], line["rules"]) for line in lines] == [
        ("g1", ["cosco", "chancay-port"]), ("g2", ["lima"])]
    assert "2 items, 2 matched" in back.stderr
    with sqlite3.connect(workspace.db) as db:
        assert db.execute("SELECT count(*) FROM alerts").fetchone()[0] == 1


def test_rules_check_points_at_the_problem(workspace: Workspace) -> None:
    workspace.write_feeds("https://example.org/rss")
    workspace.write("bad.yaml", "rules:\n  - id: bad\n    query: 'port NEAR/3 (chancay'\n")
    result = workspace.run("rules", "check")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    at = lines.index(next(line for line in lines if "bad.yaml:3:" in line))
    assert lines[at + 1] == "        query: 'port NEAR/3 (chancay'"
    assert lines[at + 2] == "    " + " " * (lines[at].split(":")[2:3] and
                                            int(lines[at].split(":")[2]) - 1) + "^"
    assert lines[at + 2].index("^") == lines[at + 1].index("(")


def test_the_shipped_schema_is_current_and_the_shipped_files_follow_it() -> None:
    shipped = json.loads((REPO / "rules" / "schema.json").read_text(encoding="utf-8"))
    assert shipped == json_schema(), "regenerate: monitor rules schema -o rules/schema.json"
    validator = Draft202012Validator(shipped)
    for path in sorted((REPO / "rules").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# yaml-language-server: $schema=schema.json"), path.name
        errors = list(validator.iter_errors(yaml.safe_load(text)))
        assert errors == [], (path.name, errors[:3])
    bad = {"rules": [{"id": "x", "query": "a", "colour": "red"}]}
    assert list(validator.iter_errors(bad))
