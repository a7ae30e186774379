"""The Write tab's "Clarify" action (SCA prompting): the ranked wordings of the instruction, each
word shaded by its share of the model's attention (Integrated Gradients), and a choice that puts
the picked wording in the instruction box. Nothing replaces the person's text until they pick."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from app.service import StoryService
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


@dataclass
class ClarifyPanel:
    button: gr.Button
    view: gr.HTML
    wordings: gr.Radio
    texts: gr.State
    auto: gr.Checkbox | None
    target: gr.State  # which box a picked wording goes to: "instruction" or "premise"


def build_write(button: gr.Button) -> ClarifyPanel:
    """The results of the Clarify button, under the instruction box (inside the Write tab)."""
    view = gr.HTML(elem_id="clarify-view")
    wordings = gr.Radio(label="Use a wording (your text stays until you pick one)", choices=[], visible=False,
                        elem_id="wordings")
    return ClarifyPanel(button, view, wordings, gr.State([]), None, gr.State("instruction"))


def build_auto() -> gr.Checkbox:
    """The auto-mode setting (inside the Auto tab)."""
    return gr.Checkbox(label="Clarify each revised plan with SCA before writing from it (about 30 s more a step)",
                       elem_id="sca-auto")


def wire(per_person: Callable[[Callable], Callable], panel: ClarifyPanel, story_id: gr.State,
         instruction: gr.Textbox, premise: gr.Textbox, premise_button: gr.Button, status: gr.Markdown,
         model: dict) -> None:
    """Registers the panel's events; per_person turns fn(service, *inputs) into an event function
    that runs on the scoped service of whoever sent the event; `model` is the concurrency group of
    events that call the model."""
    def clarify_for(target: str):
        def clarify(service: StoryService, sid, text, progress=gr.Progress()):
            # an instruction is read against the story's short-term memory; a premise starts a new story
            sid = None if sid is None or target == "premise" else int(sid)
            try:
                result = service.clarify(sid, text or "", progress=lambda done, what: progress(done, desc=what))
            except StoryloomError as e:
                gr.Warning(str(e))
                return {panel.view: "", panel.wordings: gr.update(choices=[], value=None, visible=False),
                        panel.texts: [], panel.target: target, status: f"**Could not clarify:** {e}"}
            kept = [c for c in result.candidates if not c.drifted]
            choices = [(f"{c.text} ({c.origin})", n) for n, c in enumerate(kept)]
            note = (f"Clarified the {target}: {len(kept)} wordings ranked, {len(result.candidates) - len(kept)} "
                    "dropped for drifting in meaning. Pick one to use it, or keep yours.")
            return {panel.view: table(result), panel.wordings: gr.update(choices=choices, value=None, visible=True),
                    panel.texts: [c.text for c in kept], panel.target: target, status: note}
        return clarify

    def use(number, texts, target, instruction_now, premise_now):
        if number is None or not texts:
            return {instruction: instruction_now, premise: premise_now}
        picked = texts[int(number)]
        return {instruction: picked if target == "instruction" else instruction_now,
                premise: picked if target == "premise" else premise_now}

    def load_auto(service: StoryService, sid):
        try:
            return False if sid is None else service.clarify_automatically(int(sid))
        except StoryloomError:  # not this person's story: the page shows why elsewhere
            return False

    def save_auto(service: StoryService, sid, on):
        if sid is None:
            return "**Nothing was saved:** start or open a story first."
        try:
            service.set_clarify_automatically(int(sid), bool(on))
        except StoryloomError as e:
            return f"**Nothing was saved:** {e}"
        return "Auto mode now clarifies each revised plan." if on else "Auto mode writes from the revised plans as they are."

    shown = [panel.view, panel.wordings, panel.texts, panel.target, status]
    panel.button.click(per_person(clarify_for("instruction")), [story_id, instruction], shown, **model)
    premise_button.click(per_person(clarify_for("premise")), [story_id, premise], shown, **model)
    panel.wordings.input(use, [panel.wordings, panel.texts, panel.target, instruction, premise], [instruction, premise])
    if panel.auto is not None:
        story_id.change(per_person(load_auto), story_id, panel.auto)
        panel.auto.input(per_person(save_auto), [story_id, panel.auto], status)
