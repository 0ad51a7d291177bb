"""What goes on the wire for a real issue: the rendered demo week, spliced, travels 8bit and
smaller than the message the email package builds, and the minify step at the end of the
render changes no pixel in Chromium at 375 and 800 px."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from digest.delivery.mime import MAX_LINE, MessageTemplate
from digest.delivery.providers.base import Letter, Recipient
from digest.delivery.providers.outbox import build_mime
from digest.edition import render
from digest.edition.personalize import (NAME, PREFERENCES_URL, UNSUBSCRIBE_URL, VIEW_URL,
                                        VOTE_URL)
from digest.edition.weeks import Edition
from factories import sample_comparisons

CHROMIUM = Path("/usr/bin/chromium")
EDITION = Edition(2026, 47)


def _render(monkeypatch=None, *, minify: bool = True, count: int = 8):
    from digest.settings import load_settings

    conf = load_settings(base_url="https://digest.example.com", timezone="UTC")
    if not minify:
        monkeypatch.setattr(render, "minify_email_html", lambda document: document)
    return render.render_issue(sample_comparisons(count), edition=EDITION,
                               window=EDITION.window(conf.tz), settings=conf)


def _reader(i: int) -> Recipient:
    token = f"{i}.6b0d2d00.htZrZhBPz5I1rbZPEiM477yL0xc"
    return Recipient(f"reader{i}@example.com",
                     {UNSUBSCRIBE_URL: f"https://digest.example.com/u/{token}",
                      VIEW_URL: f"https://digest.example.com/issues/2026-W47?t={token}",
                      VOTE_URL: f"https://digest.example.com/vote/{token}",
                      PREFERENCES_URL: f"https://digest.example.com/p/{token}",
                      NAME: f"Reader {i}"},
                     f"Reader {i}", i, f"digest.2026-W47.{i}.abcd1234")


def test_the_rendered_issue_travels_8bit_and_smaller_than_before():
    issue = _render()
    # Room on every line for the values spliced in per reader (400 octets for the longest).
    assert max(len(line.encode()) for line in issue.html.split("\n")) < MAX_LINE - 400
    letter = Letter.from_documents(subject=issue.subject, html=issue.html, text=issue.text,
                                   from_addr="Weekly Verdicts <digest@verdicts.example.com>",
                                   tag="2026-W47", list_id="Weekly <weekly.example.com>")
    template = MessageTemplate(letter, eight_bit=True)
    assert (template.text.cte, template.html.cte) == ("8bit", "8bit")
    for i in range(3):
        reader = _reader(i)
        spliced = template.render(reader)
        before = bytes(build_mime(letter, reader))  # quoted-printable, as every send was
        assert b"Content-Transfer-Encoding: 8bit" in spliced
        assert len(spliced) < 0.95 * len(before)
        got = email.message_from_bytes(spliced, policy=email.policy.default)
        want = email.message_from_bytes(before, policy=email.policy.default)
        assert [p.get_payload(decode=True) for p in got.iter_parts()] == \
            [p.get_payload(decode=True) for p in want.iter_parts()]
    assert "=" * 20 not in issue.text  # rule lines that quoted-printable would triple


def test_minify_keeps_text_and_verbatim_elements():
    from digest.edition.minify import minify_email_html

    words = " ".join(f"word{i}" for i in range(200))
    cells = "".join(f'<td class="c" style="padding: 0 ; color: #111">{i}</td>' for i in range(40))
    document = (f'<html><head><style>{".a{color:red}" * 60}</style></head><body>'
                f'<div style="color : red ;  margin: 0 ;">{words}</div>'
                f'<pre>  keep   this {words} </pre><a href="x" title="a  b">{words}</a>'
                f'<table><tr>{cells}</tr></table><div><div><div><b>end</b>'
                f'{"</div>" * 3}</body></html>')
    out = minify_email_html(document)
    assert '<div style="color:red;margin:0">' in out
    assert f"<pre>  keep   this {words} </pre>" in out
    assert f'title="a  b">{words}</a>' in out  # text and attribute values untouched
    assert out.count(words) == 3
    assert max(len(line) for line in out.split("\n") if words not in line) <= 320
    assert "".join(out.split()) == "".join(document.replace(
        'style="color : red ;  margin: 0 ;"', 'style="color:red;margin:0"').replace(
        'style="padding: 0 ; color: #111"', 'style="padding:0;color:#111"').split())
    kept = '<div style="white-space:pre">a  b</div>' + cells
    assert "\n</" not in minify_email_html(kept)  # spaces may matter there: none added


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_minified_email_renders_pixel_for_pixel_as_before(monkeypatch, tmp_path, artifacts_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    after = _render()
    before = _render(monkeypatch, minify=False)
    # What the step is for: lines short enough for 8bit, for about the same bytes.
    assert max(map(len, before.html.split("\n"))) > MAX_LINE
    assert max(map(len, after.html.split("\n"))) < MAX_LINE - 400
    assert len(after.html.encode()) < 1.01 * len(before.html.encode())
    assert after.shown == before.shown
    files = {}
    for name, issue in (("before", before), ("after", after)):
        files[name] = tmp_path / f"{name}.html"
        files[name].write_text(issue.html, encoding="utf-8")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            for width in (375, 800):
                shots = {}
                for name, path in files.items():
                    page = chromium.new_page(viewport={"width": width, "height": 900})
                    page.goto(path.as_uri())
                    shots[name] = page.screenshot(full_page=True)
                    (artifacts_dir / f"email-minify-{name}-{width}.png").write_bytes(shots[name])
                    page.close()
                assert shots["before"] == shots["after"], f"the rendering changed at {width} px"
        finally:
            chromium.close()
