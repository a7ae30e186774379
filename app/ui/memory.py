"""The Memory tab: the story's long-term memory as a table to read and edit (notes, lore, pins),
and a search that asks as a step would."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from app.service import StoryService
from app.service.memories import EntryRow
from app.ui.page import Page, Shown, action, problem
from common.errors import Conflict, InvalidInput, StoryloomError

MEMORY_HEADERS = ["id", "kind", "from", "pinned", "stale", "keys", "last retrieved", "text"]
MEMORY_ROWS = 500  # the table shows the newest entries; search finds any
# the entry being edited, and its version as shown (sent with a save or a deletion)
ENTRY = ("entry_id", "entry_text", "entry_keys", "entry_pinned", "entry_seen")
CLEARED = {"entry_id": None, "entry_text": "", "entry_keys": "", "entry_pinned": False, "entry_seen": None}


TAB = "Memory"


def build(page: Page) -> gr.Tab:
    with gr.Tab(TAB, id="memory") as tab:
        gr.Markdown("Long-term memory: what steps retrieve by meaning. Paragraph chunks and "
                    "summaries come from the steps; add notes (found by meaning) and lore "
                    "(put in the prompt when one of its keys is in the plan or the recent "
                    "text). Pinned entries are in every prompt. Click a row to edit it.")
        with gr.Row():
            query = gr.Textbox(label="Search as a step would", scale=4, elem_id="memory-query")
            k = gr.Number(label="Entries", value=8, minimum=1, maximum=50, precision=0, scale=1, elem_id="memory-k")
            search = gr.Button("Search", scale=1, elem_id="memory-search")
        found = gr.Dataframe(headers=["score or rule", "cosine", "words", "id", "kind", "from", "text"], value=[],
                             interactive=False, wrap=True, max_height=300, elem_id="memory-found",
                             column_widths=["9%", "8%", "7%", "6%", "9%", "12%", "49%"])
        with gr.Row():
            entry_id = gr.Number(label="Entry id (click a row; for a new entry use Add)", precision=0, scale=1,
                                 elem_id="entry-id")
            keys = gr.Textbox(label="Lore keys, comma-separated", scale=2, elem_id="entry-keys")
            pinned = gr.Checkbox(label="Pinned: in every prompt", scale=1, elem_id="entry-pinned")
        text = gr.Textbox(label="Entry text", lines=3, elem_id="entry-text")
        with gr.Row():
            buttons = {"entry_save_button": gr.Button("Save entry", variant="primary", elem_id="entry-save"),
                       "entry_note_button": gr.Button("Add as a new note", elem_id="entry-add-note"),
                       "entry_lore_button": gr.Button("Add as new lore", elem_id="entry-add-lore"),
                       "entry_delete_button": gr.Button("Delete entry", variant="stop", elem_id="entry-delete")}
        stale = gr.Checkbox(label="Show stale entries (from text edited since)", elem_id="show-stale")
        table = gr.Dataframe(headers=MEMORY_HEADERS, value=[], interactive=False, wrap=True, max_height=600,
                             elem_id="memory-table",
                             column_widths=["6%", "9%", "11%", "7%", "6%", "10%", "11%", "40%"])
        seen = gr.State(None)  # the picked entry's version, sent with a save or a deletion (in the tab: a
        # state that is a child of the tabs themselves is taken for a tab and mislabels them)
    page.add(memory_tab=tab, memory_query=query, memory_k=k, memory_search_button=search, found=found,
             entry_id=entry_id, entry_keys=keys, entry_pinned=pinned, entry_text=text, entry_seen=seen,
             show_stale=stale, memory_table=table, **buttons)
    return tab


def memory_rows(rows: list[EntryRow]) -> list[list]:
    return [[r.id, r.kind, r.where, "📌" if r.pinned else "", "stale" if r.stale else "", ", ".join(r.keys),
             r.last_retrieved.strftime("%Y-%m-%d %H:%M") if r.last_retrieved else "", r.text]
            for r in reversed(rows[-MEMORY_ROWS:])]


def parse_keys(text: str | None) -> list[str]:
    return [k for k in (text or "").split(",") if k.strip()]


def memory_page(service: StoryService, sid, stale: bool, note: str = "") -> Shown:
    rows = service.memories.entries(int(sid), include_stale=bool(stale), newest=MEMORY_ROWS)
    total = service.memories.count(int(sid), include_stale=bool(stale))
    shown = f" (the newest {MEMORY_ROWS} shown; search finds any)" if total > MEMORY_ROWS else ""
    return {"memory_table": memory_rows(rows), "status": note or f"{total} memory entries{shown}."}


def refresh_memory(service: StoryService, sid, stale) -> Shown:
    if sid is None:
        return {}
    try:
        return memory_page(service, sid, stale)
    except StoryloomError as e:  # its outputs are the table and the status line
        return {"status": problem(str(e))["status"]}


def refresh_table(service: StoryService, sid, stale, shown_tab) -> Shown:
    """After the story changed or another story opened: no entry picked, and the table as it is
    now when the tab is shown (the event before it has said what went wrong, if anything did).
    A tab not shown loads its table when it is opened."""
    if shown_tab != TAB:
        return CLEARED
    try:
        rows = [] if sid is None else memory_page(service, sid, stale)["memory_table"]
    except StoryloomError:
        rows = []
    return {"memory_table": rows, **CLEARED}


def changed(service: StoryService, sid, stale, act: Callable, *args) -> Shown:
    """Run an action on an entry; afterwards the table shows the memory as it is now. Refused
    because the entry changed since it was picked (or was never picked), the fields keep what the
    person typed, and doing it again acts on the entry as the message quoted it."""
    try:
        note, fields = act(service, int(sid), *args)
    except Conflict as e:
        return {**memory_page(service, sid, stale), **problem(str(e)), "entry_seen": e.version}
    except StoryloomError as e:
        return {**memory_page(service, sid, stale), **problem(str(e))}
    return {**memory_page(service, sid, stale, note), **fields}


def entry_number(number) -> int:
    if number is None or int(number) <= 0:
        raise InvalidInput("give the id of an entry (click a row of the table)")
    return int(number)


def editing(row: EntryRow) -> Shown:
    """The entry in the fields, as it is stored."""
    return {"entry_id": row.id, "entry_text": row.text, "entry_keys": ", ".join(row.keys),
            "entry_pinned": row.pinned, "entry_seen": row.version}


def saved(service: StoryService, sid: int, number, text, keys, pinned, seen) -> tuple[str, Shown]:
    updated = service.memories.update(sid, entry_number(number), text, keys=parse_keys(keys), pinned=bool(pinned),
                                      seen=seen or "")
    if updated.stale:
        return (f"Entry {updated.id} saved. It is stale (its paragraph was edited since), so steps "
                "do not retrieve it.", editing(updated))
    return f"Entry {updated.id} saved; the next step sees it as it is now.", editing(updated)


def added(service: StoryService, sid: int, kind: str, text, keys, pinned) -> tuple[str, Shown]:
    row = service.memories.add(sid, text, kind, keys=parse_keys(keys), pinned=bool(pinned))
    return f"{kind.capitalize()} {row.id} added.", editing(row)


def deleted(service: StoryService, sid: int, number, seen) -> tuple[str, Shown]:
    service.memories.delete(sid, entry_number(number), seen=seen or "")
    return f"Entry {int(number)} deleted.", dict(CLEARED)


@action
def save_entry(service: StoryService, sid, stale, number, text, keys, pinned, seen) -> Shown:
    return changed(service, sid, stale, saved, number, text, keys, pinned, seen)


@action
def add_note(service: StoryService, sid, stale, number, text, keys, pinned, seen) -> Shown:
    return changed(service, sid, stale, added, "note", text, keys, pinned)


@action
def add_lore(service: StoryService, sid, stale, number, text, keys, pinned, seen) -> Shown:
    return changed(service, sid, stale, added, "lore", text, keys, pinned)


@action
def delete_entry(service: StoryService, sid, stale, number, text, keys, pinned, seen) -> Shown:
    return changed(service, sid, stale, deleted, number, seen)


@action(story=False)
def pick_entry(service: StoryService, sid, evt: gr.SelectData) -> Shown:
    if sid is None or not evt.row_value:
        return {}
    try:
        row = service.memories.entry(int(sid), int(evt.row_value[0]))
    except StoryloomError as e:
        return problem(f"{e}; the table was out of date and is shown as it is now")
    return editing(row)


@action
def search_memory(service: StoryService, sid, query, k) -> Shown:
    result = service.memories.search(int(sid), query, int(k or 8))
    where = result.where
    rows = [[f"{h.score:.3f}", f"{h.cosine:.3f}", f"{h.words:.1f}", h.entry_id, h.kind,
             where.get(h.entry_id, ""), h.text] for h in result.hits]
    rows += [[e.reason, "", "", e.entry_id, e.kind, where.get(e.entry_id, ""), e.text] for e in result.by_rule]
    return {"found": rows, "status": f"{len(result.hits)} found by meaning, {len(result.by_rule)} by rule."}


def wire(page: Page) -> None:
    shown = page.of("story_id", "show_stale")
    page["memory_tab"].select(page.on(refresh_memory), shown, page.of("memory_table", "status"))
    page["show_stale"].change(page.on(refresh_memory), shown, page.of("memory_table", "status"))
    desk = page.of("memory_table", *ENTRY, "writing", "status")
    for button, handler in (("entry_save_button", save_entry), ("entry_note_button", add_note),
                            ("entry_lore_button", add_lore), ("entry_delete_button", delete_entry)):
        page[button].click(page.on(handler), [*shown, *page.of(*ENTRY)], desk)
    page["memory_table"].select(page.on(pick_entry), page["story_id"], page.of(*ENTRY, "memory_table", "writing",
                                                                                "status"))
    page["memory_search_button"].click(page.on(search_memory), page.of("story_id", "memory_query", "memory_k"),
                                page.of("found", "writing", "status"))
