"""The Repetition tab: the story's anti-repetition settings (DITTO adapter, sentence-repetition
guard, repetition penalty, no-repeat n-grams, DRY), a chart of repetition over its paragraphs, and
the self-reinforcement analysis of the DITTO adapter."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from app.service import StoryService
from app.service.stories import decoding_version
from app.ui.page import Page, Shown, problem
from generation.backend import Decoding
from generation.adapters import DEFAULT_ADAPTER
from common.errors import Conflict, StoryloomError

DEFAULT_PENALTY = 1.1  # what story calls use when the story sets none


LABEL_EACH = 20  # paragraphs up to which the chart labels each one


def chart_frame(rows: list[dict]) -> pd.DataFrame:
    """Long format for gr.LinePlot: one row per paragraph and measure."""
    data = [{"paragraph": r["paragraph"], "measure": "rep-4 (repeated 4-grams)", "value": r["rep_4"]} for r in rows]
    data += [{"paragraph": r["paragraph"], "measure": "sentences repeating earlier text",
              "value": float(r["repeated_sentences"])} for r in rows]
    return pd.DataFrame(data, columns=["paragraph", "measure", "value"])


def chart(rows: list[dict]) -> dict:
    """The chart with whole paragraph numbers: a short story's paragraphs as labels, one each, in
    order (as numbers, the plot would tick 1.0, 1.1, ... 3.0); a longer one's as a number axis,
    whose ticks are whole once there are more paragraphs than ticks."""
    frame = chart_frame(rows)
    if len(rows) > LABEL_EACH:
        return gr.update(value=frame, sort=None)
    frame["paragraph"] = frame["paragraph"].astype(str)
    return gr.update(value=frame, sort=[str(r["paragraph"]) for r in rows])


def analysis_caption(folder: Path) -> str:
    found = folder / "repetition.json"
    if not found.is_file():
        return ("No self-reinforcement analysis yet: run `storyloom ditto analyze --adapter ADAPTER "
                f"--corpus TEXT --out {folder}`.")
    try:
        data = json.loads(found.read_text())
    except (OSError, ValueError) as e:
        return f"Cannot read {found}: {e}"
    lines = [f"Mean probability of a held-out sentence's tokens when it is repeated (from `{found.name}`, "
             f"{next(iter(data['curves'].values()))['sentences']} sentences):"]
    for name, c in data["curves"].items():
        p = c["token_probability"]
        lines.append(f"- **{name}**: {p[0]:.2f} the first time, {p[1]:.2f} the second, {p[-1]:.2f} "
                     f"the {len(p)}th")
    return "\n".join(lines)


FIELDS = ("ditto", "guard", "guard_lambda", "penalty", "ngram", "dry", "dry_base", "dry_allowed")
# what load() updates, in this order (settings_seen: the version of the settings shown, sent with a save)
SHOWN = ("adapter_line", *FIELDS, "chart", "settings_seen", "status")


TAB = "Repetition"


def build(page: Page) -> gr.Tab:
    with gr.Tab(TAB, id="repetition") as tab:
        gr.Markdown("How this story fights repetition. Settings are saved with the story and used by its "
                    "next steps.")
        adapter_line = gr.Markdown(elem_id="adapter-status")
        with gr.Row():
            ditto = gr.Checkbox(label="DITTO adapter (trained against repetition loops)", elem_id="set-ditto")
            guard = gr.Checkbox(label="Sentence-repetition guard", elem_id="set-guard")
            guard_lambda = gr.Slider(0.01, 1.0, step=0.01, label="Guard λ: a sentence seen k times is continued "
                                     "with probability × λ^k", elem_id="set-guard-lambda")
        with gr.Row():
            penalty = gr.Slider(1.0, 2.0, step=0.05, label="Repetition penalty (1: off)", elem_id="set-penalty")
            ngram = gr.Number(label="No-repeat n-gram size (0: off)", minimum=0, maximum=10, precision=0,
                              elem_id="set-ngram")
        with gr.Row():
            dry = gr.Slider(0.0, 3.0, step=0.1, label="DRY multiplier (0: off)", elem_id="set-dry")
            dry_base = gr.Slider(1.0, 4.0, step=0.05, label="DRY base", elem_id="set-dry-base")
            dry_allowed = gr.Number(label="DRY allowed length", minimum=1, maximum=10, precision=0,
                                    elem_id="set-dry-allowed")
        save_button = gr.Button("Save these settings for this story", variant="primary", elem_id="set-save")
        chart = gr.LinePlot(x="paragraph", y="value", color="measure", title="Repetition by paragraph",
                            elem_id="repetition-chart", height=260, x_axis_format="d")
        gr.Markdown("### The adapter's self-reinforcement analysis")
        gr.Markdown(analysis_caption(DEFAULT_ADAPTER), elem_id="analysis-caption")
        picture = DEFAULT_ADAPTER / "repetition.png"
        gr.Image(str(picture) if picture.is_file() else None, label="Probability of a repeated sentence, "
                 "repetition after repetition", interactive=False, elem_id="analysis-image", height=320)
        seen = gr.State(None)  # the version of the settings shown, sent with a save
    page.add(repetition_tab=tab, adapter_line=adapter_line, ditto=ditto, guard=guard, guard_lambda=guard_lambda,
             penalty=penalty, ngram=ngram, dry=dry, dry_base=dry_base, dry_allowed=dry_allowed,
             repetition_save_button=save_button, chart=chart, settings_seen=seen)
    return tab


def load(service: StoryService, sid) -> Shown:
    """The story's settings and its chart (and what the backend runs besides its model)."""
    out = {"adapter_line": f"*{service.context.writer.backend.describe()}*"}
    if sid is None:
        return out | {"chart": chart([])}
    try:
        d = service.decoding(int(sid))
        rows = service.repetition(int(sid))
    except StoryloomError as e:
        return out | {"status": f"**Could not load the repetition settings:** {e}"}
    return out | {"ditto": d.ditto, "guard": d.guard, "guard_lambda": d.guard_lambda,
                  "penalty": DEFAULT_PENALTY if d.repetition_penalty is None else d.repetition_penalty,
                  "ngram": d.no_repeat_ngram_size, "dry": d.dry_multiplier, "dry_base": d.dry_base,
                  "dry_allowed": d.dry_allowed_length, "chart": chart(rows),
                  "settings_seen": decoding_version(int(sid), d)}


def follow(service: StoryService, sid, shown_tab) -> Shown:
    """After the story changed or another story opened: the settings and chart again when the tab
    is shown (a tab not shown loads them when it is opened; a long story's chart is large)."""
    return load(service, sid) if shown_tab == TAB else {}


def save(service: StoryService, sid, seen, use_ditto, use_guard, lam, rep_penalty, no_repeat, dry_mult, base,
         allowed) -> Shown:
    """Refused when the settings changed since the page showed them: the fields keep the person's
    settings, and saving again puts them in place of those the message lists."""
    if sid is None:
        gr.Warning("Start or open a story first.")
        return {"status": "**Nothing was saved:** start or open a story first."}
    try:
        decoding = Decoding(ditto=bool(use_ditto), guard=bool(use_guard), guard_lambda=float(lam),
                            repetition_penalty=float(rep_penalty), no_repeat_ngram_size=int(no_repeat or 0),
                            dry_multiplier=float(dry_mult), dry_base=float(base),
                            dry_allowed_length=int(allowed or 1))
        service.set_decoding(int(sid), decoding, seen=seen or "")
    except (StoryloomError, TypeError, ValueError) as e:
        refused = {"status": problem(str(e))["status"]}
        return refused | {"settings_seen": e.version} if isinstance(e, Conflict) else refused
    return load(service, sid) | {"status": "Repetition settings saved; the next steps of this story use them."}


def wire(page: Page) -> None:
    page["repetition_tab"].select(page.on(load), page["story_id"], page.of(*SHOWN), api_name="repetition_settings")
    page["repetition_save_button"].click(page.on(save), page.of("story_id", "settings_seen", *FIELDS),
                                         page.of(*SHOWN), api_name="save_repetition_settings")
