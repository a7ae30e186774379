"""A manuscript in the formats writers use: Markdown, plain text, EPUB 3, DOCX and PDF (a draft
written elsewhere is read back by storage/drafts.py).

Writers take a `Manuscript` (plain values, no database) and return bytes. Heavy libraries are
imported inside the function that needs them."""

from __future__ import annotations

import html
import io
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import InvalidInput

FORMATS = ("md", "txt", "epub", "docx", "pdf", "json")
MEDIA_TYPES = {
    "md": "text/markdown", "txt": "text/plain", "json": "application/json", "pdf": "application/pdf",
    "epub": "application/epub+zip",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


@dataclass(frozen=True)
class Chapter:
    title: str | None  # None: the text before the first chapter heading
    paragraphs: list[str]


@dataclass(frozen=True)
class Manuscript:
    title: str
    chapters: list[Chapter]
    author: str = ""
    language: str = "en"
    identifier: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")

    @property
    def paragraphs(self) -> list[str]:
        return [p for c in self.chapters for p in c.paragraphs]

    @property
    def words(self) -> int:
        return sum(len(p.split()) for p in self.paragraphs)


def manuscript_of(title: str, paragraphs: list[str], chapters: list[str | None], author: str = "",
                  language: str = "en", identifier: str | None = None) -> Manuscript:
    """Chapters from a list of paragraphs and, beside each, the title of a chapter starting there."""
    parts: list[Chapter] = []
    for paragraph, heading in zip(paragraphs, chapters):
        heading = (heading or "").strip() or None
        if heading or not parts:
            parts.append(Chapter(heading, []))
        parts[-1].paragraphs.append(paragraph)
    extra = {"identifier": identifier} if identifier else {}
    return Manuscript(title, parts, author, language or "en", **extra)


# -- file names ----------------------------------------------------------------------------

def safe_filename(title: str, ext: str, limit: int = 80, limit_bytes: int = 200) -> str:
    """A file name from a title, safe on every system: letters, digits (with their combining
    marks) and a little punctuation only, so no path separators, control characters or dots at the
    ends; no reserved names; at most `limit` characters and `limit_bytes` bytes of UTF-8; "story"
    when nothing is left (a title of only emoji). The title itself is kept inside the document."""
    text = unicodedata.normalize("NFKC", title)
    text = "".join(c if (c.isalnum() or c in " -_,'()" or unicodedata.category(c).startswith("M")) else " "
                   for c in text)
    text = re.sub(r"\s+", " ", text).strip(" .-_")[:limit]
    while len(text.encode()) > limit_bytes:
        text = text[:-1]
    text = text.strip(" .-_")
    if not text or text.upper() in {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                                    *(f"LPT{i}" for i in range(10))}:
        text = "story"
    return f"{text}.{ext}"


# -- Markdown and plain text ---------------------------------------------------------------

_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~])")
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")
_MD_LINE_START = re.compile(r"^([ \t]*)([#>+=-]|\d+[.)])", re.MULTILINE)


def md_escape(text: str) -> str:
    """Text that a CommonMark reader shows as written (backslash escapes, which any ASCII
    punctuation may take): no emphasis, links, HTML, headings or lists out of prose."""
    text = _MD_ENTITY.sub(r"\\&", _MD_INLINE.sub(r"\\\1", text))
    def start(found: re.Match) -> str:  # "# x" -> "\# x", "1. x" -> "1\. x"
        lead, mark = found.groups()
        return lead + (mark[:-1] + "\\" + mark[-1] if mark[0].isdigit() else "\\" + mark)

    return _MD_LINE_START.sub(start, text)


def _blocks(m: Manuscript, title, byline, heading, paragraph) -> bytes:
    """The title, the author's line, then chapter headings and paragraphs, as blank-line separated
    blocks, each written by the function given for its kind."""
    parts = [title(m.title)] + ([byline(m.author)] if m.author else [])
    for chapter in m.chapters:
        parts += ([heading(chapter.title)] if chapter.title else []) + [paragraph(p) for p in chapter.paragraphs]
    return ("\n\n".join(parts) + "\n").encode()


def _lines(paragraph: str) -> list[str]:
    """A paragraph's lines, without blank ones (a blank line would end the paragraph in a file)."""
    return [line.strip() for line in paragraph.split("\n") if line.strip()]


def _md_heading(text: str) -> str:
    escaped = md_escape(" ".join(text.split()))
    return escaped[:-1] + "\\#" if escaped.endswith("#") else escaped  # not a closing sequence


def to_markdown(m: Manuscript) -> bytes:
    return _blocks(m, lambda t: f"# {_md_heading(t)}", lambda a: f"*by {md_escape(a)}*",
                   lambda c: f"## {_md_heading(c)}", lambda p: "  \n".join(md_escape(x) for x in _lines(p)))


def to_text(m: Manuscript) -> bytes:
    """Plain text: the title underlined with '=', chapter titles with '-' (as Setext headings, so
    the draft reader finds them again), paragraphs separated by blank lines."""
    def underlined(text: str, mark: str) -> str:
        return f"{text}\n{mark * max(3, len(text))}"

    return _blocks(m, lambda t: underlined(t, "="), lambda a: f"by {a}", lambda c: underlined(c, "-"),
                   lambda p: "\n".join(_lines(p)))


# -- EPUB 3 ----------------------------------------------------------------------------------

def _xhtml_paragraphs(paragraphs: list[str]) -> str:
    return "\n".join(f"<p>{html.escape(p).replace(chr(10), '<br/>')}</p>" for p in paragraphs)


_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")  # a BCP 47 tag, roughly


def xml_safe(m: Manuscript) -> Manuscript:
    """The manuscript without the control characters XML cannot hold (EPUB, DOCX; and the PDF, which
    has no glyph for them): a tab becomes a space, a newline inside a paragraph stays."""
    def clean(text: str | None, keep: str = "") -> str | None:
        if text is None:
            return None
        return "".join(c for c in text.replace("\t", " ")
                       if c in keep or (unicodedata.category(c) not in ("Cc", "Cs") and c not in "\ufffe\uffff"))

    return Manuscript(clean(m.title), [Chapter(clean(c.title), [clean(p, "\n") for p in c.paragraphs])
                                       for c in m.chapters], clean(m.author), m.language, m.identifier)


def to_epub(m: Manuscript) -> bytes:
    """EPUB 3 with a title page, one document per chapter and a table of contents by chapter."""
    from ebooklib import epub

    m = xml_safe(m)
    book = epub.EpubBook()
    book.set_identifier(m.identifier)
    book.set_title(m.title)
    book.set_language(m.language if _LANGUAGE.fullmatch(m.language or "") else "und")
    if m.author:
        book.add_author(m.author)
    style = epub.EpubItem(uid="style", file_name="style.css", media_type="text/css", content=(
        "body { font-family: serif; line-height: 1.5; }\n"
        "h1, h2 { text-align: center; margin: 2em 0 1em; }\n"
        "p { text-indent: 1.5em; margin: 0; text-align: justify; }\n"
        "p.author { text-indent: 0; text-align: center; font-style: italic; }\n").encode())
    book.add_item(style)
    title_page = epub.EpubHtml(title=m.title, file_name="title.xhtml", lang=book.language)
    title_page.content = (f"<h1>{html.escape(m.title)}</h1>"
                          + (f'<p class="author">{html.escape(m.author)}</p>' if m.author else ""))
    title_page.add_item(style)
    book.add_item(title_page)
    documents = []
    for number, chapter in enumerate(m.chapters, 1):
        heading = chapter.title or m.title
        doc = epub.EpubHtml(title=heading, file_name=f"chapter-{number:04d}.xhtml", lang=book.language)
        doc.content = f"<h2>{html.escape(heading)}</h2>\n{_xhtml_paragraphs(chapter.paragraphs)}"
        doc.add_item(style)
        book.add_item(doc)
        documents.append(doc)
    book.toc = documents
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = [title_page, "nav", *documents]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


# -- DOCX ------------------------------------------------------------------------------------

def to_docx(m: Manuscript) -> bytes:
    """A Word document: a title page (Title style, the author below), then each chapter from a new
    page under a Heading 1, paragraphs in the Normal style with a first-line indent."""
    from docx import Document
    from docx.enum.text import WD_ALIGN_PARAGRAPH, WD_BREAK
    from docx.shared import Pt

    m = xml_safe(m)
    doc = Document()
    doc.core_properties.title = _cut(m.title, 255)  # Word's limit for a document property; the page keeps it all
    doc.core_properties.author = _cut(m.author, 255)
    doc.core_properties.language = m.language
    normal = doc.styles["Normal"]
    normal.font.size = Pt(12)
    normal.paragraph_format.first_line_indent = Pt(18)
    normal.paragraph_format.space_after = Pt(0)
    normal.paragraph_format.line_spacing = 1.3
    title = doc.add_heading(m.title, level=0)
    title.alignment = WD_ALIGN_PARAGRAPH.CENTER
    if m.author:
        byline = doc.add_paragraph(m.author)
        byline.alignment = WD_ALIGN_PARAGRAPH.CENTER
        byline.paragraph_format.first_line_indent = Pt(0)
    for chapter in m.chapters:
        doc.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
        if chapter.title:
            doc.add_heading(chapter.title, level=1)
        for paragraph in chapter.paragraphs:
            doc.add_paragraph(paragraph)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- PDF -------------------------------------------------------------------------------------

def pdf_fonts() -> dict[str, Path]:
    """DejaVu Serif (Latin, Greek, Cyrillic and more), as shipped inside matplotlib."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = {"": folder / "DejaVuSerif.ttf", "B": folder / "DejaVuSerif-Bold.ttf",
             "I": folder / "DejaVuSerif-Italic.ttf"}
    missing = [str(p) for p in fonts.values() if not p.is_file()]
    if missing:
        raise InvalidInput(f"the PDF font is missing ({', '.join(missing)}); reinstall matplotlib")
    return fonts


def missing_glyphs(m: Manuscript) -> list[str]:
    """Characters of the manuscript the PDF font cannot draw (e.g. Chinese), so the person is told."""
    from fontTools.ttLib import TTFont

    with TTFont(str(pdf_fonts()[""]), lazy=True) as font:
        covered = set(font.getBestCmap())
    text = m.title + m.author + "".join(c.title or "" for c in m.chapters) + "".join(m.paragraphs)
    return sorted({c for c in text if not c.isspace() and ord(c) not in covered})


def to_pdf(m: Manuscript) -> bytes:
    """A5 pages, DejaVu Serif 11 pt, justified; a title page; each chapter from a new page with a
    PDF bookmark; page numbers at the foot. Text stays extractable (embedded TrueType subset)."""
    from fpdf import FPDF

    m = xml_safe(m)

    class Book(FPDF):
        def footer(self):
            if self.page_no() > 1:
                self.set_y(-12)
                self.set_font("serif", size=9)
                self.cell(0, 6, str(self.page_no() - 1), align="C")

    pdf = Book(format=(148, 210))  # A5 in mm
    pdf.set_margins(16, 16, 16)
    pdf.set_auto_page_break(True, margin=18)
    for style, path in pdf_fonts().items():
        pdf.add_font("serif", style, str(path))
    pdf.set_title(m.title)
    pdf.set_author(m.author)
    pdf.set_lang(m.language)
    pdf.set_creator("storyloom")
    pdf.add_page()
    pdf.set_y(60)
    pdf.set_font("serif", "B", 20)
    pdf.multi_cell(0, 10, m.title, align="C")
    if m.author:
        pdf.ln(6)
        pdf.set_font("serif", "I", 12)
        pdf.multi_cell(0, 7, m.author, align="C")
    for chapter in m.chapters:
        pdf.add_page()
        heading = chapter.title or m.title
        pdf.start_section(heading)
        pdf.set_font("serif", "B", 14)
        pdf.ln(10)
        pdf.multi_cell(0, 8, heading, align="C")
        pdf.ln(6)
        pdf.set_font("serif", size=11)
        for paragraph in chapter.paragraphs:
            pdf.multi_cell(0, 5.6, "    " + paragraph, align="J")
            pdf.ln(1.5)
    return bytes(pdf.output())
