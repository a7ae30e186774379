"""Manuscripts out and in: export a story's current branch (Markdown, text, EPUB, DOCX, PDF) or
the whole story as a JSON backup; import a backup, or a draft written elsewhere as a new story
with its long-term and short-term memory built from it.

An import is one transaction, bounded by the limits (paragraphs and words of a draft, bytes of a
backup), and says how far it has got. It can be cancelled at any point until it commits: a
cancelled import writes nothing. It uses the model only for a draft's closing summary and plans,
so it does not hold the model's line while it reads, embeds and saves."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

from app.service.context import StoryContext, checked_text
from app.service.stories import StoryView, view_of
from memory.longterm import Embedded, chunks
from storage import backup, drafts, formats, repo
from common.errors import Cancelled, InvalidInput, StoryloomError

Progress = Callable[[str], None]  # a line saying how far a long import or export has got
EMBED_BATCH = 256  # memory chunks embedded at a time when importing a draft
SAVE_BATCH = 1000  # paragraphs saved between two progress lines (and checks for a cancel)
RECENT_FOR_SUMMARY = 600  # words of the draft's end the model reads to write its short-term memory


MAX_FILE = 500_000_000  # bytes of a file to import


def read_file(path: Path) -> bytes:
    """A file to import, refused before reading when it is too large."""
    try:
        if path.stat().st_size > MAX_FILE:
            raise InvalidInput(f"{path.name} has {path.stat().st_size:,} bytes; the limit is {MAX_FILE:,}")
        return path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None


@dataclass(frozen=True)
class Exported:
    filename: str
    data: bytes
    media_type: str
    notice: str = ""  # e.g. characters the PDF font cannot draw


class Manuscripts:
    def __init__(self, context: StoryContext):
        self.context = context

    # -- export --------------------------------------------------------------------------

    def manuscript(self, story_id: int) -> formats.Manuscript:
        """The current branch (first step to the head) with its chapters."""
        view = view_of(self.context, story_id)
        with self.context.db.Session() as session:
            story = self.context.story(session, story_id)
            author = (story.settings or {}).get("author") or story.owner or ""
            language = story.language or "en"
            # the same book keeps its identifier across exports; another story (or install) gets another
            book = uuid.uuid5(uuid.NAMESPACE_URL, f"storyloom:{story.created_at.isoformat()}:{story.premise}")
        if not view.paragraphs:
            raise InvalidInput(f"story {story_id} has no paragraphs yet; there is nothing to export")
        return formats.manuscript_of(view.title, view.paragraphs, list(view.chapters), author=str(author),
                                     language=language, identifier=f"urn:uuid:{book}")

    def export(self, story_id: int, fmt: str, vectors: bool = True) -> Exported:
        """The story in format `fmt` (one of formats.FORMATS). JSON is the whole story (every
        branch, memories with vectors unless `vectors` is False, settings); the others are the
        manuscript of the current branch."""
        fmt = fmt.lower().lstrip(".")
        if fmt not in formats.FORMATS:
            raise InvalidInput(f"unknown format {fmt!r}; choose one of {', '.join(formats.FORMATS)}")
        if fmt == "json":
            with self.context.db.Session() as session:
                title = self.context.story(session, story_id).title
                document = backup.dump(session, story_id, vectors=vectors,
                                       embedder={"name": self.context.memory.embedder.name} if vectors else None)
            data = json.dumps(document, ensure_ascii=False, indent=1).encode()
            return Exported(formats.safe_filename(title, "json"), data, formats.MEDIA_TYPES["json"])
        m = self.manuscript(story_id)
        writer = {"md": formats.to_markdown, "txt": formats.to_text, "epub": formats.to_epub,
                  "docx": formats.to_docx, "pdf": formats.to_pdf}[fmt]
        notice = ""
        if fmt == "pdf" and (missing := formats.missing_glyphs(m)):
            shown = "".join(missing[:20]) + ("…" if len(missing) > 20 else "")
            notice = (f"The PDF font (DejaVu Serif) has no glyphs for {len(missing)} characters ({shown}); they are "
                      "left blank in the PDF. EPUB and DOCX show them with the reader's fonts.")
        return Exported(formats.safe_filename(m.title, fmt), writer(m), formats.MEDIA_TYPES[fmt], notice)

    # -- import --------------------------------------------------------------------------

    def importing(self) -> AbstractContextManager[threading.Event]:
        """Claim this person's import line (one import at a time each), with its cancel signal."""
        return self.context.runs.running((self.context.owner, "import"),
                                         busy="You are importing a file already: wait for it, or cancel it.")

    def cancel_import(self) -> None:
        self.context.runs.stop((self.context.owner, "import"), idle="You are not importing anything.")

    def import_file(self, name: str, raw: bytes, premise: str | None = None, on_progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> StoryView:
        """A new story from a file: a storyloom JSON backup (restored exactly), or a Markdown or
        plain-text draft. Nothing is written unless all of it is; setting `cancel` stops it with
        Cancelled (and nothing written) at its next check, until it commits."""
        progress = _checked(on_progress or (lambda line: None), cancel)
        suffix = Path(name).suffix.lower()
        drafts = {".md": True, ".markdown": True, ".txt": False, ".text": False}
        if suffix == ".json" or (suffix not in drafts and raw.lstrip()[:1] == b"{"):
            return self.import_backup(raw, Path(name).name, progress)
        if suffix not in drafts and suffix:
            raise InvalidInput(f"{Path(name).name}: import takes a storyloom .json backup or a .md or .txt draft")
        return self.import_draft(raw, Path(name).name, premise, progress, markdown=drafts.get(suffix, False))

    def import_backup(self, raw: bytes, name: str = "the backup", progress: Progress | None = None) -> StoryView:
        progress = progress or (lambda line: None)
        if len(raw) > self.context.limits.backup_bytes:
            raise InvalidInput(f"{name} has {len(raw):,} bytes; a backup may have at most "
                               f"{self.context.limits.backup_bytes:,} (STORYLOOM_MAX_BACKUP_BYTES)")
        progress(f"Reading {name} ({len(raw):,} bytes)…")
        document = backup.parse(raw, name)
        embedder = self.context.memory.embedder
        info = document["vectors"] or {}
        vectors = None
        if document["memories"] and (document["vectors"] is None or backup.vector_dim(document) != embedder.dim
                                     or info.get("name") not in (None, embedder.name)):
            texts = [m["text"] for m in document["memories"]]
            progress(f"Embedding {len(texts)} memory entries (the backup's vectors are missing or from another model)")
            vectors = [v.tobytes() for v in self._embed(texts, progress).vectors]
        progress(f"Saving {len(document['steps']):,} paragraphs and {len(document['memories']):,} memory entries…")
        with self.context.db.Session.begin() as session:
            story = backup.restore(session, document, vectors, owner=self.context.owner_name)
            story_id = story.id
            progress("Restored.")  # the last moment to cancel: the commit follows
        return view_of(self.context, story_id)

    def import_draft(self, raw: bytes, name: str, premise: str | None = None, progress: Progress | None = None,
                     markdown: bool = False) -> StoryView:
        """A draft as a new story: one step per paragraph (chapters kept), every paragraph filed into
        long-term memory, and for the last step a short-term memory and three plans written by the
        model from the end of the draft, so writing can go on from there. Earlier steps carry a
        short-term memory taken from their draft (the first sentences of the paragraphs before),
        since summarising a whole novel step by step would take hours on a small machine."""
        progress = progress or (lambda line: None)
        limits = self.context.limits
        text = drafts.decode_draft(raw, name)
        progress(f"Reading {name} ({len(raw):,} bytes)…")
        m = drafts.read_draft(text, markdown, fallback_title=Path(name).stem or "Imported draft",
                              max_paragraphs=limits.draft_paragraphs)
        if m.words > limits.draft_words:
            raise InvalidInput(f"{name} has {m.words:,} words; one import takes at most {limits.draft_words:,} "
                               "(STORYLOOM_MAX_DRAFT_WORDS); split it, or import it in parts")
        title, notices = _fit(m.title, limits.title_chars, "The title")
        paragraphs = [p[:limits.paragraph_chars] for p in m.paragraphs]
        headings: list[str | None] = []
        for chapter in m.chapters:
            heading, cut = _fit(chapter.title, limits.title_chars, f"Chapter title \"{(chapter.title or '')[:40]}…\"")
            headings += [heading] + [None] * (len(chapter.paragraphs) - 1)
            notices += cut
        if premise and premise.strip():
            premise = checked_text(premise, "premise", limits.premise_chars)
        else:  # the draft's first sentences, cut to the limit at a word
            premise, _ = _fit(first_sentences(paragraphs[0], 2), min(limits.premise_chars, 600), "")
        progress(f"Read {len(paragraphs)} paragraphs in {len(m.chapters)} chapters ({m.words:,} words).")
        pieces = [(i, piece) for i, p in enumerate(paragraphs) for piece in chunks(p)]
        filed = self._embed([piece for _, piece in pieces], progress)
        memories = [_rolling_memory(paragraphs[max(0, i - 5):i + 1], limits.memory_chars) for i in range(len(paragraphs))]
        plans: list[str] = []
        progress("The model writes the short-term memory and three plans from the end of the draft…")
        try:
            writer = self.context.writer_for(None)
            recent = " ".join(" ".join(paragraphs).split()[-RECENT_FOR_SUMMARY:])
            memories[-1], _ = writer.summarize(premise, recent)
            plans, _ = writer.choices(memories[-1], paragraphs[-1])
        except StoryloomError as e:  # the draft is still imported; the person can write the memory by hand
            notices.append(f"The model could not write the short-term memory or plans ({e}); the story was imported "
                           "with a memory taken from the draft's own sentences. Check it in the Memory tab.")
        summary = self.context.memory.embed([memories[-1]])
        started = time.perf_counter()
        with self.context.db.Session.begin() as session:
            story = repo.create_story(session, title=title, premise=premise, outline="", owner=self.context.owner_name,
                                      settings={"author": m.author} if m.author else {})
            parent = None
            steps = []
            for i, paragraph in enumerate(paragraphs):
                if i and i % SAVE_BATCH == 0:
                    progress(f"Saved {i:,} of {len(paragraphs):,} paragraphs")
                parent = repo.add_step(session, story, parent=parent, plan="", paragraph=paragraph,
                                       short_memory=memories[i], plans=plans if i == len(paragraphs) - 1 else [],
                                       model=f"imported from {name}"[:500], chapter=headings[i],
                                       trace={"imported": name})
                steps.append(parent.id)
            self.context.memory.add_many(session, story.id, filed, "paragraph", [steps[i] for i, _ in pieces])
            self.context.memory.add(session, story.id, summary, "summary", step_id=steps[-1])
            story_id = story.id
            progress(f"Saved {len(paragraphs):,} paragraphs in {time.perf_counter() - started:.1f} s.")
        view = view_of(self.context, story_id)
        return replace(view, notice=" ".join(notices)) if notices else view

    def _embed(self, texts: list[str], progress: Progress) -> Embedded:
        """The texts embedded in batches, saying how far it got after each."""
        import numpy as np

        parts = []
        for start in range(0, len(texts), EMBED_BATCH):
            parts.append(self.context.memory.embed(texts[start:start + EMBED_BATCH]))
            progress(f"Embedded {min(start + EMBED_BATCH, len(texts)):,} of {len(texts):,} memory chunks")
        if not parts:
            return Embedded([], np.zeros((0, self.context.memory.embedder.dim), dtype=np.float32))
        return Embedded([t for p in parts for t in p.texts], np.concatenate([p.vectors for p in parts]))


def _checked(progress: Progress, cancel: threading.Event | None) -> Progress:
    """`progress` that first stops the import when `cancel` is set. An import says how far it got
    often (every batch embedded or saved), so each line is also where a cancel takes effect."""
    if cancel is None:
        return progress

    def line(text: str) -> None:
        if cancel.is_set():
            raise Cancelled("the import was cancelled; nothing was written")
        progress(text)

    return line


def first_sentences(text: str, n: int) -> str:
    return " ".join(drafts.sentences(text)[:n])


def _rolling_memory(paragraphs: list[str], limit: int) -> str:
    """A short-term memory taken from the draft itself: the first sentence of each paragraph given
    (the last six)."""
    text, _ = _fit("From the draft so far: " + " ".join(first_sentences(p, 1) for p in paragraphs), limit, "")
    return text


def _fit(text: str | None, limit: int, what: str) -> tuple[str | None, list[str]]:
    """`text` cut at a word to at most `limit` characters, and a notice saying so (`what` was cut)."""
    if text is None or len(text) <= limit:
        return text, []
    cut = text[:limit - 1].rsplit(" ", 1)[0] if " " in text[:limit - 1] else text[:limit - 1]
    return cut.rstrip() + "…", [f"{what} was cut to {limit} characters."] if what else []

