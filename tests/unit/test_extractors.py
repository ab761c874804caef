"""Documents to blocks: text, Markdown, HTML, CSV and PDF keep their structure."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import pytest

from core.knowledge.chunking import Block
from core.knowledge.extractors import content_type_for, extract
from core.knowledge.schemas import DocumentRejected

HAS_PYPDF = importlib.util.find_spec("pypdf") is not None


def texts(name: str, data: bytes) -> list[tuple[str, str | None]]:
    return [(b.text, b.section) for b in extract(name, data).blocks]


# --- plain text -----------------------------------------------------------------------------


def test_plain_text_splits_into_paragraphs_and_normalises_line_ends():
    doc = extract("notes.txt", b"\xef\xbb\xbfFirst line\r\nstill first.\r\n\r\n\r\nSecond.\n")
    assert doc.content_type == "text/plain"
    assert doc.blocks == [Block("First line\nstill first."), Block("Second.")]


def test_utf16_with_a_bom_is_read():
    assert texts("u.txt", "Grüße aus Köln".encode("utf-16")) == [("Grüße aus Köln", None)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "looks binary"),
        (b"caf\xe9 au lait", "is not UTF-8 text (invalid byte at offset 3)"),
        (b"   \n\n  ", "no text found"),
    ],
)
def test_unreadable_text_is_rejected_with_the_reason(data, reason):
    with pytest.raises(DocumentRejected) as rejected:
        extract("bad.txt", data)
    assert reason in rejected.value.reason
    assert rejected.value.errors[0].loc == ("file",)


def test_unknown_types_are_rejected_naming_the_supported_ones():
    with pytest.raises(DocumentRejected) as rejected:
        extract("slides.pptx", b"PK\x03\x04")
    assert "unsupported file type" in rejected.value.reason
    assert ".md" in rejected.value.reason and ".pdf" in rejected.value.reason


def test_the_extension_wins_and_the_declared_type_helps_without_one():
    assert content_type_for("README.MD", "text/plain") == "text/markdown"
    assert content_type_for("upload", "text/html; charset=utf-8") == "text/html"
    assert content_type_for("upload", "application/octet-stream") is None


# --- Markdown -------------------------------------------------------------------------------

MARKDOWN = b"""---
title: ignored front matter
---
# Handbook

Welcome to **Acme**. See [the docs](https://example.com).

## Refunds

Money back within *30 days*.

Setext heading
--------------

Under setext.

```python
# not a heading
print("hi")

print("still code")
```

#### Deep

Skipped a level.
"""


def test_markdown_headings_become_section_paths_and_code_stays_whole():
    doc = extract("handbook.md", MARKDOWN)
    assert doc.title == "Handbook"
    assert [(b.text, b.section, b.verbatim) for b in doc.blocks] == [
        ("Welcome to Acme. See the docs.", "Handbook", False),
        ("Money back within 30 days.", "Handbook > Refunds", False),
        ("Under setext.", "Handbook > Setext heading", False),
        (
            '# not a heading\nprint("hi")\n\nprint("still code")',
            "Handbook > Setext heading",
            True,
        ),
        ("Skipped a level.", "Handbook > Setext heading > Deep", False),
    ]


# --- HTML -------------------------------------------------------------------------------------

HTML = b"""<!doctype html><html><head><title>Acme &amp; Co</title>
<style>body { color: red }</style><script>var secret = 1;</script></head>
<body><nav><a href="/">Home</a></nav>
<h1>Pricing</h1><p>Plans start at <b>$12</b>&nbsp;per seat.</p>
<h2>Team</h2><ul><li>Unlimited   agents</li><li>SSO</li></ul>
<table><tr><th>Plan</th><th>Price</th></tr><tr><td>Team</td><td>12</td></tr></table>
<pre>curl https://api.example.com
  --header x</pre>
<h2>Enterprise</h2><div>Call us.<br>Anytime.</div>
</body></html>"""


def test_html_keeps_headings_blocks_tables_and_drops_scripts_and_navigation():
    doc = extract("pricing.html", HTML)
    assert doc.title == "Acme & Co"
    assert [(b.text, b.section) for b in doc.blocks] == [
        ("Plans start at $12 per seat.", "Pricing"),
        ("Unlimited agents", "Pricing > Team"),
        ("SSO", "Pricing > Team"),
        ("Plan | Price", "Pricing > Team"),
        ("Team | 12", "Pricing > Team"),
        ("curl https://api.example.com\n  --header x", "Pricing > Team"),
        ("Call us. Anytime.", "Pricing > Enterprise"),
    ]
    assert "secret" not in str(doc.blocks) and "Home" not in str(doc.blocks)


# --- CSV --------------------------------------------------------------------------------------


def test_csv_rows_read_as_self_describing_passages():
    doc = extract("plans.csv", b'plan,price,notes\nTeam,12,"per seat, monthly"\nPro,30,\n\n')
    assert doc.content_type == "text/csv"
    assert [b.text for b in doc.blocks] == [
        "plan: Team; price: 12; notes: per seat, monthly",
        "plan: Pro; price: 30",
    ]


def test_semicolon_csv_and_tsv_are_recognised():
    assert texts("eu.csv", b"plan;price\nTeam;12\n") == [("plan: Team; price: 12", None)]
    assert texts("t.tsv", b"plan\tprice\nPro\t30\n") == [("plan: Pro; price: 30", None)]


# --- PDF --------------------------------------------------------------------------------------


def make_pdf(pages: list[list[str]], outline: Sequence[tuple[str, int]] = ()) -> bytes:
    """A minimal, valid PDF: Helvetica text lines per page, optional bookmarks to pages."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    page_ids = []
    for lines in pages:
        ops = ["BT /F1 12 Tf 16 TL 72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        content = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        page_ids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
                b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                % (pages_obj, font, content)
            )
        )
    kids = b" ".join(b"%d 0 R" % p for p in page_ids)
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    outline_ref = b""
    if outline:
        root = add(b"")
        items = [add(b"") for _ in outline]
        for i, (title, page) in enumerate(outline):
            links = b""
            if i > 0:
                links += b" /Prev %d 0 R" % items[i - 1]
            if i < len(items) - 1:
                links += b" /Next %d 0 R" % items[i + 1]
            objects[items[i] - 1] = b"<< /Title (%s) /Parent %d 0 R /Dest [%d 0 R /Fit]%s >>" % (
                title.encode("latin-1"),
                root,
                page_ids[page - 1],
                links,
            )
        objects[root - 1] = b"<< /Type /Outlines /First %d 0 R /Last %d 0 R /Count %d >>" % (
            items[0],
            items[-1],
            len(items),
        )
        outline_ref = b" /Outlines %d 0 R" % root
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R%s >>" % (pages_obj, outline_ref)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


needs_pypdf = pytest.mark.skipif(
    not HAS_PYPDF, reason="pypdf is not installed (add `pypdf>=5.1` to the dependencies)"
)


@needs_pypdf
def test_pdf_text_is_read_page_by_page_with_sections_from_its_bookmarks():
    pdf = make_pdf(
        [["Acme handbook", "Welcome aboard."], ["Refunds are paid within 30 days."], ["Call us."]],
        outline=[("Introduction", 1), ("Refunds", 2)],
    )
    doc = extract("handbook.pdf", pdf)
    assert doc.content_type == "application/pdf"
    assert doc.pages == 3
    assert [(b.page, b.section) for b in doc.blocks] == [
        (1, "Introduction"),
        (2, "Refunds"),
        (3, "Refunds"),
    ]
    assert "Welcome aboard." in doc.blocks[0].text
    assert doc.blocks[1].text == "Refunds are paid within 30 days."


@needs_pypdf
def test_a_pdf_without_bookmarks_has_pages_but_no_sections():
    doc = extract("plain.pdf", make_pdf([["One."], ["Two."]]))
    assert [(b.text, b.page, b.section) for b in doc.blocks] == [
        ("One.", 1, None),
        ("Two.", 2, None),
    ]


@needs_pypdf
@pytest.mark.parametrize("data", [b"%PDF-1.4 nothing else", b"not a pdf at all"])
def test_a_broken_pdf_is_rejected_not_crashed_on(data):
    with pytest.raises(DocumentRejected) as rejected:
        extract("broken.pdf", data)
    assert "is not a readable PDF" in rejected.value.reason


@needs_pypdf
def test_a_pdf_with_no_text_layer_is_rejected():
    with pytest.raises(DocumentRejected) as rejected:
        extract("scan.pdf", make_pdf([[]]))
    assert rejected.value.reason == "no text found in it"
