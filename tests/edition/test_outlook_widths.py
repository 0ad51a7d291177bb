"""Outlook for Windows lays an email out by the widths in MJML's Outlook-only tables, not by the
CSS every other client reads. Those widths must equal each section's width less its left and
right padding, or Outlook draws the column wider than the section and pushes the card off its
frame. (mjml-python drops a section's padding from that sum when any part of the shorthand is a
unitless `0`: `padding="16px 8px 0"` gives a 600 px column in a 600 px section.)"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from mjml import mjml2html

from digest.delivery.confirmation import render_confirmation
from digest.edition.render import render_issue
from digest.edition.weeks import Edition
from digest.settings import load_settings
from factories import sample_comparisons

EDITION = Edition(2026, 47)

# A section's box (`max-width` on MJML's centring div), its padding cell, and the Outlook-only
# column cells, in document order. A column always belongs to the latest section box: MJML puts
# columns only in sections, and sections (inside wrappers) never inside columns.
_BOX = re.compile(r'<div\b[^>]*style="[^"]*margin:0px auto;max-width:(\d+)px')
_PADDING = re.compile(r'<td\b[^>]*style="([^"]*direction:ltr;font-size:0px;[^"]*)"')
_COLUMN = re.compile(r'<td\b[^>]*style="vertical-align:top;width:(\d+(?:\.\d+)?)px;?"')


@dataclass
class Section:
    width: int
    padding: str = ""
    columns: list[float] = field(default_factory=list)

    @property
    def content_width(self) -> float:
        return self.width - horizontal_padding(self.padding)


def _px(value: str) -> float:
    value = value.strip()
    if value in ("0", ""):
        return 0.0
    match = re.fullmatch(r"(\d+(?:\.\d+)?)px", value)
    assert match, f"padding value {value!r} is not in px"
    return float(match.group(1))


def horizontal_padding(style: str) -> float:
    """Left plus right padding from a cell's inline style, as a browser reads the shorthand."""
    declarations = dict(part.split(":", 1) for part in style.split(";") if ":" in part)
    parts = declarations.get("padding", "0").split()
    right = parts[1] if len(parts) > 1 else parts[0]
    left = parts[3] if len(parts) > 3 else right
    left = declarations.get("padding-left", left)
    right = declarations.get("padding-right", right)
    return _px(left) + _px(right)


def outlook_sections(html: str) -> list[Section]:
    tokens = sorted([(m.start(), "box", m) for m in _BOX.finditer(html)]
                    + [(m.start(), "padding", m) for m in _PADDING.finditer(html)]
                    + [(m.start(), "column", m) for m in _COLUMN.finditer(html)],
                    key=lambda t: t[0])
    sections: list[Section] = []
    for _, kind, match in tokens:
        if kind == "box":
            sections.append(Section(int(match.group(1))))
        elif kind == "padding":
            assert sections and not sections[-1].padding, "a padding cell outside a section box"
            sections[-1].padding = match.group(1)
        else:
            assert sections, "an Outlook column outside any section"
            sections[-1].columns.append(float(match.group(1)))
    return sections


def _padding_of(style: str) -> str:
    return "; ".join(p for p in style.split(";") if p.startswith("padding")) or "no padding"


def assert_outlook_widths(html: str) -> int:
    """Every section with columns: the Outlook column widths add up to its content width."""
    checked = 0
    for section in outlook_sections(html):
        if not section.columns:
            continue  # a spacer section, or a wrapper: its sections are checked on their own
        assert sum(section.columns) == pytest.approx(section.content_width, abs=1), (
            f"section {section.width}px, {_padding_of(section.padding)}: Outlook columns "
            f"{section.columns} should add up to {section.content_width:g}px")
        checked += 1
    assert checked, "no section with columns found: the markup MJML writes has changed"
    return checked


def test_the_check_measures_what_mjml_writes():
    """On hand-written MJML: a two-column section with 20 px side padding gives Outlook two
    280 px cells, and a width that ignored the padding is caught."""
    html = mjml2html('<mjml><mj-body width="600px"><mj-section padding="10px 20px">'
                     '<mj-column><mj-text>a</mj-text></mj-column>'
                     '<mj-column><mj-text>b</mj-text></mj-column></mj-section></mj-body></mjml>')
    assert [s.columns for s in outlook_sections(html) if s.columns] == [[280, 280]]
    assert assert_outlook_widths(html) == 1
    with pytest.raises(AssertionError, match="should add up to 560px"):
        assert_outlook_widths(html.replace("width:280px", "width:300px"))
    assert horizontal_padding("padding:16px 8px 0;") == 16
    assert horizontal_padding("padding:1px 2px 3px 4px;padding-left:10px") == 12


@pytest.fixture(scope="module")
def conf():
    return load_settings(base_url="https://digest.example.com", timezone="Europe/Berlin",
                         postal_address="Verdict Digest, 1 Example Street, 10115 Berlin")


@pytest.mark.parametrize("web", [False, True], ids=["email", "archive-copy"])
def test_issue_outlook_columns_fit_their_sections(conf, web):
    # Enough comparisons for the overflow list too, so every partial is in the document.
    issue = render_issue(sample_comparisons(40), edition=EDITION,
                         window=EDITION.window(conf.tz), settings=conf, web=web)
    assert web or issue.listed, "the email should list some comparisons as links"
    assert assert_outlook_widths(issue.html) >= 1  # the content column, footer included
    # Each comparison's two tools are the two half-width cells of one table: Outlook lays them
    # out side by side by those widths (every other client shows the cells as inline blocks).
    pairs = re.findall(r'<table class="two"[^>]*><tr><td class="col"([^>]*)>', issue.html)
    cells = re.findall(r'<td class="col"([^>]*)>', issue.html)
    assert len(pairs) == issue.shown and len(cells) == 2 * issue.shown
    assert all('width="50%"' in c and 'valign="top"' in c for c in cells)


def test_confirmation_outlook_columns_fit_their_sections(conf):
    mail = render_confirmation(conf, name="Ada", confirm_url="https://digest.example.com/confirm/x")
    assert assert_outlook_widths(mail.html) >= 2  # the card's section and the footer
