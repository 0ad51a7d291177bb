"""An accessibility audit for any page the browser tests open: axe-core (the copy shipped inside
the `axe-playwright-python` wheel, so nothing is fetched) run in the page itself.

A page fails on any critical or serious violation; moderate and minor ones are reported as a
warning so they show in the test output without failing the run. A new page's test is one line:

    assert_accessible(page, "archive index")
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

FAILING = ("critical", "serious")


class AccessibilityNotice(UserWarning):
    """Moderate or minor axe findings: listed, not failed."""


@dataclass(frozen=True)
class Violation:
    rule: str
    impact: str
    help: str
    targets: tuple[str, ...]
    summary: str  # axe's explanation for the first node, e.g. the contrast figures

    def line(self) -> str:
        where = ", ".join(self.targets[:4]) + (" …" if len(self.targets) > 4 else "")
        count = len(self.targets)
        return f"{self.impact} {self.rule}: {self.help} [{count}x: {where}] {self.summary}"


@dataclass(frozen=True)
class Audit:
    label: str
    violations: tuple[Violation, ...]
    passes: int  # rules that ran and found nothing wrong: proof the audit looked at something

    @property
    def failing(self) -> list[Violation]:
        return [v for v in self.violations if v.impact in FAILING]

    @property
    def notices(self) -> list[Violation]:
        return [v for v in self.violations if v.impact not in FAILING]

    def report(self, violations: list[Violation]) -> str:
        return f"{self.label}:\n" + "\n".join("  " + v.line() for v in violations)


def _target(node: dict) -> str:
    """The node's selector (inside frames or shadow roots axe gives a list: the last part)."""
    last = node["target"][-1]
    return last if isinstance(last, str) else json.dumps(last)


def _summary(node: dict) -> str:
    checks = node.get("any", []) + node.get("all", []) + node.get("none", [])
    return checks[0]["message"] if checks else ""


def audit(page, label: str = "", *, frames: bool = False) -> Audit:
    """Run axe-core on the page as it is now (colour scheme, viewport and all).

    `frames=False` leaves iframes out: axe would wait for a copy of itself in each frame, and a
    sandboxed frame (the preview's) cannot run one; audit a frame's document on its own."""
    from axe_playwright_python.sync_playwright import Axe

    options = {"resultTypes": ["violations", "passes"], "iframes": frames}
    response = Axe().run(page, options=options).response
    violations = tuple(
        Violation(rule=v["id"], impact=v.get("impact") or "minor", help=v["help"],
                  targets=tuple(_target(n) for n in v["nodes"]),
                  summary=_summary(v["nodes"][0]) if v["nodes"] else "")
        for v in response["violations"])
    return Audit(label or page.url, violations, len(response["passes"]))


def assert_accessible(page, label: str = "", *, frames: bool = False) -> Audit:
    """0 critical and 0 serious axe violations on the page; the rest listed as warnings."""
    result = audit(page, label, frames=frames)
    assert result.passes > 0, f"{result.label}: axe ran no rule (empty page?)"
    if result.notices:
        warnings.warn(result.report(result.notices), AccessibilityNotice, stacklevel=2)
    assert not result.failing, result.report(result.failing)
    return result
