"""The Inspect tab: a step's trace as Markdown (what the model saw, part by part)."""

from __future__ import annotations

import gradio as gr

from app.service import StoryService
from app.ui.page import Page, Shown, action, plain

PART_LABELS = {"premise": "premise", "short_memory": "short-term memory", "memories": "retrieved memories",
               "lore": "pinned entries and lore",
               "last_paragraph": "recent text", "instruction": "instruction (plan)"}


def _fence(text: str) -> str:
    return "````text\n" + text.replace("````", "'''") + "\n````"


def decoding_line(d: dict) -> str:
    penalty = d.get("repetition_penalty")
    parts = [f"DITTO adapter {'on' if d.get('ditto') else 'off'}" + (f" ({d['adapter']})" if d.get("adapter") else ""),
             f"sentence guard λ {d.get('guard_lambda')}" if d.get("guard") else "sentence guard off",
             f"repetition penalty {penalty if penalty is not None else 'as each call sets it'}",
             f"no-repeat {d['no_repeat_ngram_size']}-grams" if d.get("no_repeat_ngram_size") else "no-repeat n-grams off",
             f"DRY ×{d['dry_multiplier']}" if d.get("dry_multiplier") else "DRY off"]
    return "**Decoding:** " + " · ".join(parts)


def inspector_markdown(trace: dict) -> str:
    lines = [f"**Step {trace['step_id']}** · {plain(str(trace.get('model', '')))} · {trace.get('seconds', 0):.1f} s · "
             f"{trace.get('prompt_tokens', 0)} prompt + {trace.get('completion_tokens', 0)} completion tokens · "
             f"{trace.get('retries', 0)} retries", ""]
    if trace.get("plan"):
        lines += [f"**Followed:** {plain(trace['plan'])}", ""]
    if trace.get("decoding"):
        lines += [decoding_line(trace["decoding"]), ""]
    parts = trace.get("parts") or {}
    if parts:
        total = sum(p["tokens"] for p in parts.values())
        allowed = sum(p["budget"] for p in parts.values())
        lines += ["| part of the paragraph prompt | tokens | allowance |", "|---|---:|---:|"]
        lines += [f"| {PART_LABELS.get(name, name)} | {p['tokens']} | {p['budget']} |" for name, p in parts.items()]
        lines += [f"| **all parts** | **{total}** | **{allowed}** |", ""]
    retrieved = trace.get("retrieved") or []
    if retrieved:
        lines += ["**Retrieved memories** (fused rank score · cosine to the plan · shared-word score):", ""]
        lines += [f"- `{r['score']:.3f}` · `{r.get('cosine', r['score']):.3f}` · `{r.get('words', 0):.1f}` {plain(r['text'])}"
                  for r in retrieved] + [""]
    lore = trace.get("lore") or []
    if lore:
        lines += ["**Pinned entries and lore** (why each is in the prompt):", ""]
        lines += [f"- *{plain(r['reason'])}* {plain(r['text'])}" for r in lore] + [""]
    if trace.get("lore_left_out"):
        lines += [f"*{trace['lore_left_out']} more pinned or triggered entries were left out: the prompt has room "
                  "for the first ones only (pinned first, then the oldest lore).*", ""]
    for call in trace.get("calls", []):
        problem = f" — refused: {plain(str(call['problem']))}" if call.get("problem") else ""
        lines += [f"#### {plain(str(call['part']).replace('_', ' '))} (try {call['attempt']}, "
                  f"{call.get('prompt_tokens', '?')} → {call.get('completion_tokens', '?')} tokens){problem}",
                  "Prompt:", _fence(call["prompt"]), "Raw output:", _fence(call["output"]), ""]
    return "\n".join(lines)


def build(page: Page) -> None:
    with gr.Tab("Inspect", id="inspect"):
        number = gr.Number(label="Paragraph number (0 or empty: the last)", precision=0, elem_id="inspect-number")
        button = gr.Button("Show what the model saw", elem_id="inspect")
        inspected = gr.Markdown(elem_id="inspected")
    page.add(inspect_number=number, inspect_button=button, inspected=inspected)


@action
def inspect(service: StoryService, sid, number) -> Shown:
    return {"inspected": inspector_markdown(service.stories.inspect_paragraph(int(sid), int(number or 0)))}


def wire(page: Page) -> None:
    page["inspect_button"].click(page.on(inspect), page.of("story_id", "inspect_number"),
                                 page.of("inspected", "writing", "status"))
