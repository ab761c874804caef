"""Documents to `Block`s: plain text, Markdown, HTML, PDF and CSV.

Each extractor keeps what chunking needs to respect a document's structure — headings as
section paths, paragraphs, code, table rows, PDF pages — and drops what is not content
(scripts, styles, navigation markup). The format comes from the file name's extension,
else from the declared content type. PDF support needs `pypdf`, imported only when a PDF
arrives, so the rest works without it.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any

from core.knowledge.chunking import Block
from core.knowledge.schemas import DocumentRejected

_log = logging.getLogger(__name__)
MAX_SECTION_CHARS = 500
_HEADING_SEPARATOR = " > "


@dataclass(frozen=True)
class ExtractedDocument:
    """A document's content as blocks, with its type and what else it told us."""

    content_type: str
    blocks: list[Block]
    title: str | None = None
    pages: int | None = None


# --- format detection -------------------------------------------------------------------

_BY_EXTENSION = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
}
_ALIASES = {"text/x-markdown": "text/markdown", "application/xhtml+xml": "text/html"}
SUPPORTED_EXTENSIONS = frozenset(_BY_EXTENSION)


def content_type_for(name: str, declared: str | None = None) -> str | None:
    """The format we will read `name` as, or None when we cannot read it."""
    by_name = _BY_EXTENSION.get(PurePosixPath(name).suffix.lower())
    if by_name is not None:
        return by_name
    if declared:
        base = declared.split(";")[0].strip().lower()
        base = _ALIASES.get(base, base)
        if base in _EXTRACTORS:
            return base
    return None


def extract(name: str, data: bytes, declared_type: str | None = None) -> ExtractedDocument:
    """Read a document; `DocumentRejected` says why one cannot be read."""
    content_type = content_type_for(name, declared_type)
    if content_type is None:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise DocumentRejected(name, f"unsupported file type (supported: {supported})")
    document = _EXTRACTORS[content_type](name, data)
    if not any(b.text.strip() for b in document.blocks):
        raise DocumentRejected(name, "no text found in it")
    return document


def decode_text(name: str, data: bytes) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with a BOM; anything else is refused rather
    than guessed, and NUL characters (which PostgreSQL cannot store) are dropped."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise DocumentRejected(name, "is not valid UTF-16 text") from None
    else:
        if b"\x00" in data[:8192]:
            raise DocumentRejected(name, "looks binary, not text")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DocumentRejected(
                name, f"is not UTF-8 text (invalid byte at offset {exc.start})"
            ) from None
    return text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")


def _section(path: list[str]) -> str | None:
    joined = _HEADING_SEPARATOR.join(p for p in path if p)
    if len(joined) > MAX_SECTION_CHARS:
        joined = joined[: MAX_SECTION_CHARS - 1] + "…"
    return joined or None


def _paragraphs(text: str) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.strip():
            yield paragraph.strip()


# --- plain text ---------------------------------------------------------------------------


def _text(name: str, data: bytes) -> ExtractedDocument:
    text = decode_text(name, data)
    return ExtractedDocument("text/plain", [Block(p) for p in _paragraphs(text)])


# --- Markdown -----------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n(?:---|\.\.\.)\n", re.DOTALL)
_INLINE = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images: keep the alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links: keep the label
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?!\w)"), r"\1"),
    (re.compile(r"`([^`\n]+)`"), r"\1"),
]


def _plain_inline(text: str) -> str:
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    return text


def _markdown(name: str, data: bytes) -> ExtractedDocument:
    text = _FRONT_MATTER.sub("", decode_text(name, data), count=1)
    blocks: list[Block] = []
    headings: list[str] = []  # headings[i] is the current heading of level i + 1
    title: str | None = None
    paragraph: list[str] = []
    fence: str | None = None
    code: list[str] = []

    def flush() -> None:
        if paragraph:
            body = _plain_inline("\n".join(paragraph)).strip()
            if body:
                blocks.append(Block(body, _section(headings)))
            paragraph.clear()

    def heading(level: int, words: str) -> None:
        nonlocal title
        flush()
        del headings[level - 1 :]
        headings.extend([""] * (level - 1 - len(headings)))
        headings.append(_plain_inline(words).strip())
        if title is None and level == 1:
            title = headings[-1]

    for line in text.split("\n"):
        if fence is not None:
            if line.strip().startswith(fence):
                blocks.append(Block("\n".join(code), _section(headings), verbatim=True))
                fence, code = None, []
            else:
                code.append(line)
            continue
        opening = _FENCE.match(line)
        if opening:
            flush()
            fence = opening.group(1)
            continue
        atx = _ATX.match(line)
        if atx:
            heading(len(atx.group(1)), atx.group(2))
            continue
        setext = _SETEXT.match(line)
        if setext and paragraph:  # the paragraph above was a heading
            words = " ".join(paragraph)
            paragraph.clear()
            heading(1 if setext.group(1)[0] == "=" else 2, words)
            continue
        if setext and setext.group(1)[0] == "-":  # a thematic break
            flush()
            continue
        if not line.strip():
            flush()
            continue
        paragraph.append(line)
    flush()
    if fence is not None and code:  # an unclosed fence runs to the end of the document
        blocks.append(Block("\n".join(code), _section(headings), verbatim=True))
    return ExtractedDocument("text/markdown", blocks, title=title)


# --- HTML ---------------------------------------------------------------------------------

_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head", "nav", "iframe"})
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote",
        "ul", "ol", "li", "dl", "dt", "dd", "table", "thead", "tbody", "tr", "figure",
        "figcaption", "form", "fieldset", "address", "details", "summary", "hr", "body",
    }
)  # fmt: skip
_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "wbr"})


class _HtmlBlocks(HTMLParser):
    """Collects text per block element; headings become the section path."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.headings: list[str] = []
        self.title: str | None = None
        self._text: list[str] = []
        self._skip: list[str] = []
        self._heading: tuple[int, list[str]] | None = None
        self._pre = 0
        self._in_title = False
        self._title: list[str] = []
        self._cells: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIP and tag not in _VOID:
            self._skip.append(tag)
            return
        if self._skip:
            return
        if tag in _HEADINGS:
            self._flush()
            self._heading = (_HEADINGS[tag], [])
        elif tag == "pre":
            self._flush()
            self._pre += 1
        elif tag == "tr":
            self._flush()
            self._cells = []
        elif tag in ("td", "th") and self._cells is not None:
            self._cells.append("")
        elif tag == "br":
            self._write("\n")
        elif tag in _BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            return
        if tag in _HEADINGS and self._heading is not None:
            level, words = self._heading
            self._heading = None
            del self.headings[level - 1 :]
            self.headings.extend([""] * (level - 1 - len(self.headings)))
            self.headings.append(_collapse("".join(words)))
        elif tag == "pre" and self._pre:
            text = "".join(self._text).strip("\n")
            self._text = []
            self._pre -= 1
            if text.strip():
                self.blocks.append(Block(text, _section(self.headings), verbatim=True))
        elif tag == "tr" and self._cells is not None:
            cells = [_collapse(c) for c in self._cells]
            self._cells = None
            if any(cells):
                row = " | ".join(cells)
                self.blocks.append(Block(row, _section(self.headings), verbatim=True))
        elif tag in _BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title.append(data)
        if self._skip:
            return
        self._write(data)

    def _write(self, data: str) -> None:
        if self._heading is not None:
            self._heading[1].append(data)
        elif self._cells is not None and self._cells:
            self._cells[-1] += data
        elif self._cells is None:
            self._text.append(data)

    def _flush(self) -> None:
        if self._pre:
            return
        text = _collapse("".join(self._text))
        self._text = []
        if text:
            self.blocks.append(Block(text, _section(self.headings)))

    def close(self) -> None:
        super().close()
        self._flush()
        self.title = _collapse("".join(self._title)) or None


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _html(name: str, data: bytes) -> ExtractedDocument:
    parser = _HtmlBlocks()
    parser.feed(decode_text(name, data))
    parser.close()
    title = parser.title or next((h for h in parser.headings if h), None)
    return ExtractedDocument("text/html", parser.blocks, title=title)


# --- CSV ------------------------------------------------------------------------------------


def _csv(name: str, data: bytes, delimiter: str | None) -> ExtractedDocument:
    """Each row as `column: value; column: value`, so a passage reads on its own."""
    text = decode_text(name, data)
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise DocumentRejected(name, f"is not valid CSV ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return ExtractedDocument("text/csv", [])
    header = [h.strip() or f"column {i + 1}" for i, h in enumerate(rows[0])]
    blocks = []
    for row in rows[1:]:
        fields = [
            f"{header[i] if i < len(header) else f'column {i + 1}'}: {value.strip()}"
            for i, value in enumerate(row)
            if value.strip()
        ]
        blocks.append(Block("; ".join(fields), verbatim=True))
    content_type = "text/tab-separated-values" if delimiter == "\t" else "text/csv"
    return ExtractedDocument(content_type, blocks)


# --- PDF -----------------------------------------------------------------------------------

PDF_REQUIREMENT = "pypdf>=5.1"


def _pdf(name: str, data: bytes) -> ExtractedDocument:
    """Text page by page (each block carries its page), sections from the PDF's outline."""
    try:
        import pypdf
        from pypdf.errors import PyPdfError
    except ImportError:  # pragma: no cover - depends on the install
        raise DocumentRejected(
            name, f"reading PDF needs the pypdf package ({PDF_REQUIREMENT}); install it"
        ) from None
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentRejected(name, "is an encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        outline = _outline(reader)
        metadata = reader.metadata
        title = str(metadata.title) if metadata is not None and metadata.title else None
    except DocumentRejected:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise DocumentRejected(name, f"is not a readable PDF ({type(exc).__name__})") from None
    blocks: list[Block] = []
    for number, text in enumerate(pages, 1):
        section = _section(outline.get(number, [])) if outline else None
        cleaned = text.replace("\x00", "")
        blocks.extend(Block(p, section, number) for p in _paragraphs(cleaned))
    return ExtractedDocument("application/pdf", blocks, title=title, pages=len(pages))


def _outline(reader: Any) -> dict[int, list[str]]:
    """Page number (1-based) -> the heading path in force on it, from the bookmarks."""
    starts: list[tuple[int, list[str]]] = []

    def walk(items: list[Any], path: list[str]) -> None:
        last: list[str] = path
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            try:
                page = reader.get_destination_page_number(item) + 1
            except Exception as exc:  # a bookmark to nowhere: skip it, keep the rest
                _log.debug("skipping a PDF bookmark without a page: %s", exc)
                continue
            last = [*path, str(item.title).strip()]
            starts.append((page, last))

    try:
        walk(list(reader.outline), [])
    except Exception:  # a broken outline is not a reason to refuse the text
        return {}
    if not starts:
        return {}
    starts.sort(key=lambda s: s[0])
    by_page: dict[int, list[str]] = {}
    current: list[str] = []
    index = 0
    for number in range(1, len(reader.pages) + 1):
        while index < len(starts) and starts[index][0] <= number:
            current = starts[index][1]
            index += 1
        by_page[number] = current
    return by_page


_EXTRACTORS: dict[str, Callable[[str, bytes], ExtractedDocument]] = {
    "text/plain": _text,
    "text/markdown": _markdown,
    "text/html": _html,
    "application/pdf": _pdf,
    "text/csv": lambda name, data: _csv(name, data, None),
    "text/tab-separated-values": lambda name, data: _csv(name, data, "\t"),
}
