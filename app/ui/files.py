"""The Files tab: export the manuscript (EPUB, DOCX, PDF, Markdown, text) or the whole story as a
JSON backup, and import a backup or a draft written elsewhere as a new story."""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from app.service import StoryService, StoryView
from app.service.manuscripts import read_file
from app.ui.page import STORY_PAGE, Page, Shown, action, problem, render, stream
from common.errors import InvalidInput

EXPORT_CHOICES = [("EPUB (e-book)", "epub"), ("DOCX (Word)", "docx"), ("PDF", "pdf"), ("Markdown", "md"),
                  ("Plain text", "txt"), ("JSON backup (whole story)", "json")]
HIDDEN = {"download": gr.update(visible=False)}


class ExportFolder:
    """Where exports wait to be downloaded: a temporary folder per app, each export in its own
    subfolder (two stories may share a title); exports older than `keep_seconds` are removed
    at the next export (and Gradio's copies by its delete_cache). Its export() is the Export
    button's handler."""

    def __init__(self, keep_seconds: float = 3600):
        self.root = Path(tempfile.mkdtemp(prefix="storyloom-exports-"))
        self.keep_seconds = keep_seconds
        weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)  # gone with the app

    def save(self, filename: str, data: bytes) -> Path:
        cutoff = time.time() - self.keep_seconds
        for old in self.root.iterdir():
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        target = Path(tempfile.mkdtemp(dir=self.root)) / filename
        try:
            target.write_bytes(data)
        except OSError as e:
            shutil.rmtree(target.parent, ignore_errors=True)
            raise InvalidInput(f"cannot save the export for download: {e.strerror}") from None
        return target

    def export(self, service: StoryService, sid, fmt, with_vectors) -> Shown:
        """The Export button: the story in the chosen format, ready to download."""
        done = service.manuscripts.export(int(sid), fmt, vectors=bool(with_vectors))
        path = self.save(done.filename, done.data)
        note = f"{done.filename}: {len(done.data):,} bytes, ready to download." + (
            f" {done.notice}" if done.notice else "")
        return {"download": gr.update(value=str(path), label=f"⬇ Download {done.filename}", visible=True),
                "status": note, "writing": ""}


def build(page: Page) -> None:
    with gr.Tab("Files", id="files"):
        gr.Markdown("**Export** the manuscript (the current branch, with its chapters) for "
                    "readers and publishers, or the whole story as a JSON backup: every branch, "
                    "the memories and the settings.")
        with gr.Row():
            fmt = gr.Radio(label="Format", choices=EXPORT_CHOICES, value="epub", elem_id="export-format", scale=3)
            vectors = gr.Checkbox(label="JSON: include memory vectors (larger file, no re-embedding on import)",
                                  value=True, elem_id="export-vectors", scale=1)
        with gr.Row():
            export_button = gr.Button("Export", variant="primary", elem_id="export")
            download = gr.DownloadButton("Download", visible=False, elem_id="download")
        gr.Markdown("**Import** a storyloom JSON backup (restored exactly, as a new story), or a "
                    "Markdown / plain-text draft written elsewhere: it becomes a new story, one "
                    "step per paragraph, with chapters from its headings and its memory built "
                    "from the text, so you can write on from where it ends.")
        file = gr.File(label="A .json backup, or a .md / .txt draft",
                       file_types=[".json", ".md", ".markdown", ".txt"], type="filepath", elem_id="import-file")
        premise = gr.Textbox(label="Premise of a draft (optional; default: its first sentences)", lines=2,
                             elem_id="import-premise")
        with gr.Row():
            import_button = gr.Button("Import as a new story", variant="primary", elem_id="import")
            cancel_button = gr.Button("Cancel the import", variant="stop", elem_id="import-cancel")
    page.add(export_format=fmt, export_vectors=vectors, export_button=export_button, download=download,
             import_file=file, import_premise=premise, import_button=import_button, import_cancel=cancel_button)


@action(story=False)
def import_story(service: StoryService, path, premise_text):
    if not path:
        yield problem("Choose a file to import first.")
        return
    raw, name = read_file(Path(path)), Path(path).name

    def imported(view: StoryView) -> str:
        return (f"Imported **{name}** as story {view.id}, {len(view.paragraphs)} paragraphs."
                + (f" {view.notice}" if view.notice else ""))

    with service.manuscripts.importing() as cancel:  # also set when the page goes away mid-import
        for event in stream(import_file, service, name, raw, premise_text or None, cancel,
                            waiting=service.readiness.waiting):
            yield render(service, event, note=imported)


def import_file(service: StoryService, name: str, raw: bytes, premise: str | None, cancel, on_text) -> StoryView:
    """The import, its progress lines shown as the text being written."""
    return service.manuscripts.import_file(name, raw, premise, on_progress=lambda line: on_text("import", line),
                                           cancel=cancel)


@action(story=False)
def cancel_import(service: StoryService) -> Shown:
    service.manuscripts.cancel_import()
    return {"status": "Cancelling the import… nothing of it will be kept."}


def wire(page: Page, follow: Callable) -> None:
    exports = ExportFolder(keep_seconds=page.files_ttl)
    page["export_button"].click(page.on(action(exports.export, also=HIDDEN)),
                                page.of("story_id", "export_format", "export_vectors"),
                                page.of("download", "writing", "status"))
    # an import holds the model only for a draft's closing summary (its calls take their turn on
    # the model), so it has a line of its own: steps go on while someone imports a novel
    follow(page["import_button"].click(page.on(import_story, pane=True), page.story("import_file", "import_premise"),
                                       page.of(*STORY_PAGE), api_name="import_story", concurrency_id="imports",
                                       concurrency_limit=page.writers))
    page["import_cancel"].click(page.on(cancel_import), None, page.of("writing", "status"), concurrency_limit=None,
                                api_name="cancel_import")
