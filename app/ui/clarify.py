"""The Write tab's "Clarify" action (SCA prompting): the ranked wordings of the instruction, each
word shaded by its share of the model's attention (Integrated Gradients), and a choice that puts
the picked wording in the instruction box. Nothing replaces the person's text until they pick."""

from __future__ import annotations

import html

import gradio as gr

from app.service import StoryService
from app.ui.page import Page, Shown
from generation.sca import Candidate, Clarification
from common.errors import StoryloomError


def heat(candidate: Candidate) -> str:
    """The candidate's words as HTML spans, the background as strong as the word's share of the
    attribution (relative to an even share); a drifted candidate is shown plain."""
    if candidate.attribution is None:
        return f'<span class="sca-plain">{html.escape(candidate.text)}</span>'
    words = candidate.attribution.words
    even = 1 / max(len(words), 1)
    spans = []
    for word, share in words:
        alpha = min(1.0, share / (2 * even))
        spans.append(f'<span class="sca-word" title="{share:.1%} of the attribution" '
                     f'style="background: rgba(255, 140, 0, {alpha:.2f})">{html.escape(word)}</span>')
    return " ".join(spans)


def _number(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(result: Clarification) -> str:
    """The ranked candidates with their scores, as an HTML table (escaped)."""
    rows = []
    for rank, c in enumerate(result.candidates, 1):
        m = c.measures
        verdict = "meaning drifted, not offered" if c.drifted else _number(c.comprehension, 3)
        rows.append(f'<tr class="{"sca-drifted" if c.drifted else "sca-kept"}"><td>{rank}</td>'
                    f"<td>{html.escape(c.origin)}</td><td>{heat(c)}</td><td>{verdict}</td>"
                    f"<td>{_number(c.similarity)}</td><td>{_number(m['readability'], 0)}</td>"
                    f"<td>{_number(m['formality'], 0)}</td><td>{_number(m['concreteness'])}</td></tr>")
    widths = "".join(f'<col style="width: {w}%">' for w in (4, 11, 45, 12, 7, 7, 7, 7))
    return (f'<table id="sca-candidates" style="width: 100%; table-layout: fixed"><colgroup>{widths}</colgroup>'
            '<thead><tr><th>#</th><th>wording</th><th>words shaded by attention</th>'
            "<th>comprehension</th><th>similarity</th><th>readability</th><th>formality</th>"
            f"<th>concreteness</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<p><small>Integrated Gradients, {result.ig_steps} steps; {result.seconds:.0f} s. Comprehension: "
            "how evenly and fully the model attends to the words (1 is best). Readability: Flesch reading "
            "ease. Formality: Heylighen and Dewaele's F-score. Concreteness: 1 abstract to 5 concrete.</small></p>")


CLARIFIED = ("clarify_view", "wordings", "wording_texts", "wording_target", "status")


def build_write(page: Page, button: gr.Button) -> None:
    """The results of the Clarify button, under the instruction box (inside the Write tab)."""
    view = gr.HTML(elem_id="clarify-view")
    wordings = gr.Radio(label="Use a wording (your text stays until you pick one)", choices=[], visible=False,
                        elem_id="wordings")
    page.add(clarify_button=button, clarify_view=view, wordings=wordings, wording_texts=gr.State([]),
             wording_target=gr.State("instruction"))  # which box a picked wording goes to


def build_auto(page: Page) -> None:
    """The auto-mode setting (inside the Auto tab)."""
    page.add(sca_auto=gr.Checkbox(label="Clarify each revised plan with SCA before writing from it (about 30 s "
                                  "more a step)", elem_id="sca-auto"))


def clarified(service: StoryService, sid, text, target: str, progress: gr.Progress) -> Shown:
    """The ranked wordings of the instruction (read against the story's short-term memory) or of
    the premise (which starts a new story)."""
    sid = None if sid is None or target == "premise" else int(sid)
    try:
        result = service.clarify(sid, text or "", progress=lambda done, what: progress(done, desc=what))
    except StoryloomError as e:
        gr.Warning(str(e))
        return {"clarify_view": "", "wordings": gr.update(choices=[], value=None, visible=False),
                "wording_texts": [], "wording_target": target, "status": f"**Could not clarify:** {e}"}
    kept = [c for c in result.candidates if not c.drifted]
    choices = [(f"{c.text} ({c.origin})", n) for n, c in enumerate(kept)]
    note = (f"Clarified the {target}: {len(kept)} wordings ranked, {len(result.candidates) - len(kept)} "
            "dropped for drifting in meaning. Pick one to use it, or keep yours.")
    return {"clarify_view": table(result), "wordings": gr.update(choices=choices, value=None, visible=True),
            "wording_texts": [c.text for c in kept], "wording_target": target, "status": note}


def clarify_instruction(service: StoryService, sid, text, progress=gr.Progress()) -> Shown:
    return clarified(service, sid, text, "instruction", progress)


def clarify_premise(service: StoryService, sid, text, progress=gr.Progress()) -> Shown:
    return clarified(service, sid, text, "premise", progress)


def use(number, texts, target, instruction_now, premise_now) -> Shown:
    """The picked wording into the box it was asked for."""
    if number is None or not texts:
        return {"instruction": instruction_now, "premise": premise_now}
    picked = texts[int(number)]
    return {"instruction": picked if target == "instruction" else instruction_now,
            "premise": picked if target == "premise" else premise_now}


def load_auto(service: StoryService, sid) -> Shown:
    try:
        return {"sca_auto": False if sid is None else service.clarify_automatically(int(sid))}
    except StoryloomError:  # not this person's story: the page shows why elsewhere
        return {"sca_auto": False}


def save_auto(service: StoryService, sid, on) -> Shown:
    if sid is None:
        return {"status": "**Nothing was saved:** start or open a story first."}
    try:
        service.set_clarify_automatically(int(sid), bool(on))
    except StoryloomError as e:
        return {"status": f"**Nothing was saved:** {e}"}
    return {"status": "Auto mode now clarifies each revised plan." if on
            else "Auto mode writes from the revised plans as they are."}


def wire(page: Page) -> None:
    """The panel's events; both Clarify buttons call the model (its concurrency group). Their API
    names are the ones they always had: clarify (the instruction) and clarify_1 (the premise)."""
    shown = page.of(*CLARIFIED)
    page["clarify_button"].click(page.on(clarify_instruction), page.of("story_id", "instruction"), shown,
                                 api_name="clarify", **page.model)
    page["clarify_premise_button"].click(page.on(clarify_premise), page.of("story_id", "premise"), shown,
                                         api_name="clarify_1", **page.model)
    page["wordings"].input(page.keyed(use), page.of("wordings", "wording_texts", "wording_target", "instruction",
                                                    "premise"), page.of("instruction", "premise"))
    page["story_id"].change(page.on(load_auto), page["story_id"], page["sca_auto"])
    page["sca_auto"].input(page.on(save_auto), page.of("story_id", "sca_auto"), page["status"])
