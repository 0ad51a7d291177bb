"""The outbox writes one .eml per recipient that any mail reader (here: Python's `email`
package) opens as a proper multipart/alternative message with every list header."""

from __future__ import annotations

import email
import email.policy
import json

from digest.delivery.providers.outbox import OutboxProvider
from provider_samples import ISSUE, letter, recipients


def test_eml_files_parse_with_both_parts_and_every_header(tmp_path):
    batch = recipients(3)
    with OutboxProvider(tmp_path) as provider:
        outcomes = provider.send_batch(letter(unsubscribe_mailto="unsubscribe@verdicts.example"),
                                       batch, batch_key="b-1")
    assert [o.status for o in outcomes] == ["sent"] * 3

    folder = tmp_path / ISSUE
    files = sorted(folder.glob("*.eml"))
    assert len(files) == 3
    index = [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines()]
    assert [entry["to"] for entry in index] == [r.email for r in batch]
    assert {entry["file"] for entry in index} == {f.name for f in files}

    for path, r, outcome in zip(files, batch, outcomes):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        assert msg["List-Unsubscribe"] == (f"<{r.unsubscribe_url()}>, "
                                           "<mailto:unsubscribe@verdicts.example?subject="
                                           "unsubscribe>")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Id"] == "Weekly Verdicts <weekly.verdicts.example>"
        assert msg["Message-ID"] == outcome.message_id == f"<{r.message_id}@verdicts.example>"
        assert msg["X-Digest-Issue"] == ISSUE
        assert msg["To"].addresses[0].addr_spec == r.email
        assert msg["Subject"] == "Weekly verdicts: 2 new comparisons"
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert "Ärger & joy" in text and f"Unsubscribe: {r.unsubscribe_url()}" in text
        assert f'href="{r.unsubscribe_url().replace("&", "&amp;")}"' in html
        assert "%%" not in text + html
    assert msg["To"].addresses[0].display_name == "Zoë"


def test_rewriting_a_delivery_replaces_its_file(tmp_path):
    batch = recipients(1)
    with OutboxProvider(tmp_path) as provider:
        provider.send_batch(letter(), batch, batch_key="b-1")
        provider.send_batch(letter(), batch, batch_key="b-1")
    assert len(list((tmp_path / ISSUE).glob("*.eml"))) == 1
    assert not list((tmp_path / ISSUE).glob("*.tmp"))
