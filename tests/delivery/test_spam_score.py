"""The demo issue, as a reader's mail app receives it (the outbox's .eml), scores at most 0 with
SpamAssassin's local rules: nothing in the markup itself (a preheader painted in the background
colour, say) counts against the mail. Network tests (DNS blocklists, Razor) stay off: the tests
never leave the machine, and they judge the sender, not the markup."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess

import pytest

from digest.cli.demo_run import run_demo

SPAMASSASSIN = shutil.which("spamassassin")
NOW = dt.datetime(2026, 11, 20, 9, tzinfo=dt.timezone.utc)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SPAMASSASSIN is None, reason="spamassassin is not installed "
                       "(Debian: apt-get install spamassassin; .ci/run does)"),
]


def spam_score(message: bytes, home) -> tuple[float, list[str]]:
    """SpamAssassin's score and rule names for one message, local rules only, no Bayes or
    auto-whitelist (so the result does not depend on what was scanned before)."""
    result = subprocess.run(
        [SPAMASSASSIN, "--local", "--test-mode", "--cf=use_bayes 0", "--cf=use_auto_whitelist 0",
         "--cf=bayes_auto_learn 0"],
        input=message, capture_output=True, timeout=120, check=True,
        env={**os.environ, "HOME": str(home)})  # its user_prefs go to tmp, not the real home
    report = result.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+) required=[\d.]+ tests=(.*?)"
                       r"(?:autolearn|version)=", report, flags=re.M | re.S)
    assert status, report[:2000]
    rules = [r for r in re.split(r"[,\s]+", status.group(2)) if r]
    return float(status.group(1)), rules


def test_demo_issue_scores_at_most_zero(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("DIGEST_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    result = run_demo(tmp_path / "demo", now=NOW)
    messages = sorted((tmp_path / "demo" / "outbox").glob("*/*.eml"))
    assert result.sent == len(messages) > 0
    score, rules = spam_score(messages[0].read_bytes(), tmp_path)
    print(f"SpamAssassin (local rules): {score} {rules}")
    assert "HTML_FONT_LOW_CONTRAST" not in rules
    assert score <= 0, f"score {score} with {rules}"
