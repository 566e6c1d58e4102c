"""The shipped watch list in rules/ against a labelled set of real-world wording.

tests/data/watchlist_cases.yaml holds English, Spanish and Chinese items, about a third of them
near-misses (Costco, the Cosco sports brand, the Chancay culture, SouthComm, other FTAs, other
Southern Commands). Each case lists exactly the rule ids that must match.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO
from monitor.match import Document, match
from monitor.rules import load_rules

RULES = load_rules(REPO / "rules")
CASES = yaml.safe_load((Path(__file__).parent / "data" / "watchlist_cases.yaml")
                       .read_text(encoding="utf-8"))["cases"]
SHIPPED_IDS = {"chancay-port", "cosco", "peru-china-fta", "southcom"}


def test_the_shipped_rules_are_the_four_topics() -> None:
    assert {rule.id for rule in RULES.rules} == SHIPPED_IDS
    assert len(RULES.feeds) >= 10


def test_the_labelled_set_is_large_and_a_third_near_misses() -> None:
    assert len(CASES) >= 60
    assert len({case["id"] for case in CASES}) == len(CASES)
    negatives = sum(1 for case in CASES if not case["expect"])
    assert negatives >= len(CASES) // 4
    for rule_id in SHIPPED_IDS:
        assert sum(rule_id in case["expect"] for case in CASES) >= 8, rule_id


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case(case: dict) -> None:
    document = Document(title=case["title"], summary=case.get("summary") or "",
                        source=case.get("source", ""), tags=tuple(case.get("tags", ())),
                        lang=case.get("lang", ""))
    matched = {m.rule_id: m.terms for m in match(document, RULES.rules)}
    assert set(matched) == set(case["expect"]), case.get("note")
    for rule_id, terms in matched.items():
        assert terms, f"{rule_id} matched without naming a term"


def test_costco_never_matches_cosco() -> None:
    for text in ("Costco opens in Lima", "COSTCO port of Chancay shipping deal",
                 "Costco Wholesale shipping containers at the port"):
        assert "cosco" not in {m.rule_id for m in match(Document(title=text), RULES.rules)}
