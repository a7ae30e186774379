"""Each export format read back by an independent tool (a CommonMark parser, epubcheck, python-docx,
pdftotext), and drafts written elsewhere read into chapters and paragraphs."""

import os
import re
import shutil
import subprocess
import zipfile

import pytest
from markdown_it import MarkdownIt

from storage import drafts, formats
from common.errors import InvalidInput

PARAGRAPHS = [
    "Zoë opened the door of the lighthouse; the sea was “quiet” for once — almost.",
    "Ελένη and Иван rowed across. Dvořák hummed.\nA second line, kept as written.",
    "It was *not* a <b>tag</b> & 1. not a list [or a link](x).",
    "# not a heading",
    "The end, for now.",
]
CHAPTERS = [None, "Chapter One: The Door", None, "Chapter *Two*", None]


def epubcheck(path) -> subprocess.CompletedProcess:
    """Debian's epubcheck (its /usr/bin/epubcheck is the jar itself, run by java)."""
    jar = os.path.realpath(shutil.which("epubcheck") or "/usr/bin/epubcheck")
    command = ["java", "-jar", jar] if jar.endswith(".jar") else [jar]
    return subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def book():
    return formats.manuscript_of("The <Lamp> & the Sea", PARAGRAPHS, CHAPTERS, author="Ann Wren", language="en")


def test_chapters_follow_the_steps_that_start_them(book):
    assert [(c.title, len(c.paragraphs)) for c in book.chapters] == [
        (None, 1), ("Chapter One: The Door", 2), ("Chapter *Two*", 2)]
    assert book.paragraphs == PARAGRAPHS


def test_markdown_is_read_by_a_commonmark_parser_as_written(book):
    html = MarkdownIt("commonmark").render(formats.to_markdown(book).decode())
    assert re.findall(r"<h1>(.*?)</h1>", html) == ["The &lt;Lamp&gt; &amp; the Sea"]
    assert re.findall(r"<h2>(.*?)</h2>", html) == ["Chapter One: The Door", "Chapter *Two*"]
    paragraphs = re.findall(r"<p>(.*?)</p>", html, re.S)
    assert paragraphs[0] == "<em>by Ann Wren</em>"
    assert paragraphs[3] == "It was *not* a &lt;b&gt;tag&lt;/b&gt; &amp; 1. not a list [or a link](x)."
    assert paragraphs[4] == "# not a heading" and "<br />\nA second line" in paragraphs[2]
    assert "<em>" not in "".join(paragraphs[1:]) and "<a " not in html and "<ol" not in html


def test_markdown_and_text_come_back_as_the_same_manuscript(book):
    back = drafts.read_draft(formats.to_markdown(book).decode(), markdown=True)
    assert (back.title, back.author, back.paragraphs) == (book.title, book.author, book.paragraphs)
    assert [c.title for c in back.chapters] == [c.title for c in book.chapters]
    text = drafts.read_draft(formats.to_text(book).decode(), markdown=False)
    assert (text.title, text.author) == (book.title, book.author)
    assert [c.title for c in text.chapters] == [c.title for c in book.chapters]
    assert text.paragraphs == [" ".join(p.split()) for p in book.paragraphs]  # plain text joins wrapped lines


def test_epub_passes_epubcheck_and_has_a_table_of_contents(book, tmp_path):
    path = tmp_path / "book.epub"
    path.write_bytes(formats.to_epub(book))
    check = epubcheck(path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No errors or warnings detected" in check.stdout + check.stderr
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        nav = z.read(next(n for n in names if n.endswith("nav.xhtml"))).decode()
        opf = z.read(next(n for n in names if n.endswith(".opf"))).decode()
        chapter = z.read(next(n for n in names if n.endswith("chapter-0002.xhtml"))).decode()
    assert "Chapter One: The Door" in nav and "Chapter *Two*" in nav
    assert "The &lt;Lamp&gt; &amp; the Sea" in opf and "Ann Wren" in opf and "<dc:language>en</dc:language>" in opf
    assert "Ελένη and Иван" in chapter and "&lt;b&gt;tag&lt;/b&gt;" in chapter


def test_docx_has_a_title_page_and_chapter_headings(book, tmp_path):
    from docx import Document

    path = tmp_path / "book.docx"
    path.write_bytes(formats.to_docx(book))
    doc = Document(str(path))
    styled = [(p.style.name, p.text) for p in doc.paragraphs if p.text]
    assert styled[0] == ("Title", book.title) and styled[1][1] == "Ann Wren"
    assert [t for s, t in styled if s == "Heading 1"] == ["Chapter One: The Door", "Chapter *Two*"]
    body = [t for s, t in styled if s == "Normal"][1:]
    assert body == PARAGRAPHS
    assert doc.core_properties.title == book.title and doc.core_properties.author == "Ann Wren"


def test_pdf_text_is_extractable_with_accents_quotes_and_non_latin_names(book, tmp_path):
    path = tmp_path / "book.pdf"
    path.write_bytes(formats.to_pdf(book))
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    flat = " ".join(text.split())
    for expected in ("The <Lamp> & the Sea", "Zoë opened the door", "“quiet”", "Ελένη and Иван", "Dvořák",
                     "Chapter One: The Door", "It was *not* a <b>tag</b>"):
        assert expected in flat, expected
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Title:\s+The <Lamp> & the Sea", info) and re.search(r"Pages:\s+[3-9]", info)
    assert formats.missing_glyphs(book) == []
    chinese = formats.manuscript_of("李白", ["李白 wrote."], [None])
    assert formats.missing_glyphs(chinese) == ["李", "白"]  # said to the person, not silently dropped


@pytest.mark.parametrize("title, expected", [
    ("The Lamp", "The Lamp.epub"), ("../../etc/passwd", "etc passwd.epub"), ("a/b\\c:d*e?", "a b c d e.epub"),
    ("bell\x07\x00tab\t", "bell tab.epub"), ("🦊🌊", "story.epub"), ("CON", "story.epub"), ("x" * 500, "x" * 80 + ".epub"),
    ("...hidden", "hidden.epub"),
])
def test_file_names_are_safe_and_the_title_is_kept(title, expected):
    assert formats.safe_filename(title, "epub") == expected


def test_plain_text_drafts_find_chapters_join_wraps_and_drop_scene_breaks():
    draft = ("My Novel\n========\n\nCHAPTER ONE\n\nIt was a dark\nand stormy night.\n\n* * *\n\n"
             "She left.\n\nChapter 2: Morning\n\nThe sun rose.\n\nIV\n\nLast words.\n")
    m = drafts.read_draft(draft, markdown=False)
    assert m.title == "My Novel"
    assert [(c.title, c.paragraphs) for c in m.chapters] == [
        ("CHAPTER ONE", ["It was a dark and stormy night.", "She left."]),
        ("Chapter 2: Morning", ["The sun rose."]), ("IV", ["Last words."])]


def test_a_single_line_of_200000_characters_becomes_many_paragraphs():
    sentence = "The tide came in over the black rocks and went out again. "
    line = (sentence * (200_000 // len(sentence) + 1))[:200_000]
    m = drafts.read_draft(line, markdown=False, fallback_title="huge")
    assert m.title == "huge" and len(m.paragraphs) > 100
    assert all(len(p.split()) <= drafts.PARAGRAPH_WORDS for p in m.paragraphs)
    assert " ".join(m.paragraphs) == " ".join(line.split())  # nothing lost
    unbroken = drafts.read_draft("x" * 200_000, markdown=False)  # no spaces at all
    assert "".join(unbroken.paragraphs) == "x" * 200_000 and max(map(len, unbroken.paragraphs)) <= 5000


@pytest.mark.parametrize("raw, message", [
    (b"", "is empty"), (b"  \n\n ", "is empty"), (b"\x00\x01\x02binary\x00" * 100, "binary"),
    (bytes(range(1, 32)) * 50, "does not look like text"),
])
def test_bad_drafts_are_refused_clearly(raw, message):
    with pytest.raises(InvalidInput, match=message):
        drafts.decode_draft(raw, "draft.txt")


def test_drafts_in_utf8_with_a_bom_or_windows_1252_are_read():
    assert drafts.decode_draft("Zoë".encode("utf-8-sig"), "a.txt") == "Zoë"
    assert drafts.decode_draft("Zoë said “hi”".encode("cp1252"), "a.txt") == "Zoë said “hi”"
    with pytest.raises(InvalidInput, match="no paragraphs"):
        drafts.read_draft("# Only a title\n", markdown=True)


def test_a_title_with_control_characters_slashes_emoji_and_500_characters_survives_every_format(tmp_path):
    from docx import Document

    title = "../a/b\\c \x07bell\x00 🦊 " + "long " * 96 + "ok"  # 500 characters
    assert len(title) == 500
    m = formats.manuscript_of(title, ["A fox came to the door.\tThen it left."], [None], author="\x1bAnn")
    epub = tmp_path / formats.safe_filename(title, "epub")
    assert epub.name.startswith("a b c bell long long") and len(epub.name) <= 85  # no ../, slashes, controls
    epub.write_bytes(formats.to_epub(m))
    check = epubcheck(epub)
    assert check.returncode == 0, check.stdout + check.stderr
    docx = tmp_path / "t.docx"
    docx.write_bytes(formats.to_docx(m))
    kept = "../a/b\\c bell 🦊 " + "long " * 96 + "ok"
    assert Document(str(docx)).paragraphs[0].text.rstrip() == kept.rstrip()  # the title kept, less its controls
    pdf = tmp_path / "t.pdf"
    pdf.write_bytes(formats.to_pdf(m))
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "../a/b\\c bell" in text and "A fox came to the door. Then it left." in " ".join(text.split())
    assert drafts.read_draft(formats.to_markdown(m).decode(), markdown=True).title == title.strip()


def test_prose_that_looks_like_a_byline_or_a_chapter_is_kept_as_prose():
    m = formats.manuscript_of("T", ["By morning the snow had buried the road.", "Part of me knew.",
                                    "Part-time work was all she could find.", "Book in hand, she climbed."],
                              [None] * 4, author="Ann")
    for write, markdown in ((formats.to_markdown, True), (formats.to_text, False)):
        back = drafts.read_draft(write(m).decode(), markdown=markdown)
        assert back.author == "Ann" and back.paragraphs == m.paragraphs and [c.title for c in back.chapters] == [None]
    stacked = drafts.read_draft("# T\n\n## Part One\n\n## Chapter 1\n\nText.\n", markdown=True)
    assert [(c.title, c.paragraphs) for c in stacked.chapters] == [("Part One: Chapter 1", ["Text."])]
    hashes = formats.manuscript_of("Issue #", ["One\n\nTwo"], ["Take #2"])
    back = drafts.read_draft(formats.to_markdown(hashes).decode(), markdown=True)
    assert (back.title, back.chapters[0].title, back.paragraphs) == ("Issue #", "Take #2", ["One\nTwo"])


def test_a_stray_byte_in_utf8_and_utf16_drafts_are_read_and_unicode_noncharacters_do_not_break_exports(tmp_path):
    from docx import Document

    novel = ("Café — she’s naïve. " * 200).encode() + b"\xff"
    assert drafts.decode_draft(novel, "a.txt").startswith("Café — she’s naïve.")  # not mojibake
    assert drafts.decode_draft("Zoë\n".encode("utf-16"), "a.txt") == "Zoë\n"
    with pytest.raises(InvalidInput, match="binary"):
        drafts.decode_draft(b"text " * 20_000 + b"\x00\x01", "a.txt")  # binary after the first 64 KiB
    assert drafts.decode_draft("a \ufffe b \uffff c".encode(), "a.txt") == "a  b  c"
    odd = formats.manuscript_of("Ti\uffffle", ["Odd \ufffe text."], ["Chap\uffffter"])
    path = tmp_path / "odd.epub"
    path.write_bytes(formats.to_epub(odd))
    assert epubcheck(path).returncode == 0
    (tmp_path / "odd.docx").write_bytes(formats.to_docx(odd))
    assert Document(str(tmp_path / "odd.docx")).paragraphs[0].text == "Tile"
