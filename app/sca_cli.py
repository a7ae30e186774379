"""`storyloom sca clarify | pause-tune`: SCA prompting from the command line."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub) -> None:
    sca = sub.add_parser("sca", help="clarify an instruction (SCA prompting) and tune the model to use [PAUSE] tokens")
    cmds = sca.add_subparsers(dest="sca_command", required=True)
    clarify = cmds.add_parser("clarify", help="paraphrase an instruction and rank the wordings by how evenly the "
                                              "model attends to their words; prints JSON")
    clarify.add_argument("text", help="the instruction or premise")
    clarify.add_argument("--story", type=int, help="a story whose short-term memory helps resolve names")
    clarify.add_argument("--candidates", type=int, default=5, help="paraphrases to ask for (default 5)")
    clarify.add_argument("--steps", type=int, default=8, help="Integrated Gradients steps (default 8)")
    clarify.add_argument("--min-similarity", type=float, default=0.4,
                         help="drop paraphrases whose meaning drifts below this cosine (default 0.4)")

    tune = cmds.add_parser("pause-tune", help="LoRA-tune the model to read prompts with [PAUSE] tokens; writes an adapter")
    tune.add_argument("--corpus", required=True, action="append",
                      help="a plain-text file of prose; its last quarter is kept for the held-out loss (repeatable)")
    tune.add_argument("--out", required=True, help="a new folder for the adapter")
    tune.add_argument("--steps", type=int, default=200)
    tune.add_argument("--lr", type=float, default=1e-3)
    tune.add_argument("--batch", type=int, default=8)
    tune.add_argument("--per-boundary", type=int, default=1, help="pauses at each clause or sentence boundary")
    tune.add_argument("--min-words", type=int, default=25, help="prompts shorter than this get no pauses")
    tune.add_argument("--sentences-only", action="store_true", help="pauses after sentence ends only, not clauses")
    tune.add_argument("--no-ditto", action="store_true", help="tune the base model, not the one with DITTO merged")


def run(args: argparse.Namespace, service, settings) -> None:
    if args.sca_command == "pause-tune":
        return _tune(args, settings)
    from generation.sca import SCASettings, clarify

    settings = SCASettings(candidates=args.candidates, ig_steps=args.steps, min_similarity=args.min_similarity)
    context = last = ""
    if args.story is not None:
        view = service.view(args.story)
        context, last = view.short_memory, (view.paragraphs[-1] if view.paragraphs else "")

    def progress(done: float, what: str) -> None:
        print(f"\r[{done:4.0%}] {what:<60}", end="", file=sys.stderr, flush=True)

    result = clarify(service.context.writer.backend, service.context.memory.embedder, args.text, context,
                     settings, progress, last, scorer=service.context.scorer)
    print(file=sys.stderr)
    print(json.dumps(result.to_dict(), indent=1, ensure_ascii=False))


def _tune(args, settings) -> None:
    import shlex

    from app.ditto_cli import _bar
    from app.wiring import ditto_adapter
    from generation.adapters import attach_adapter, fold_in
    from generation.local import load_model, resolve_model
    from generation.pause import PauseSettings
    from generation.pause_tuning import TuneConfig, tune

    config = TuneConfig(steps=args.steps, lr=args.lr, batch=args.batch,
                        pauses=PauseSettings(args.per_boundary, args.min_words, not args.sentences_only))
    config.check()
    print("loading the model ...", file=sys.stderr, flush=True)
    model, tokenizer = load_model(resolve_model(settings.model), "cpu")
    adapter = None if args.no_ditto else ditto_adapter(settings)
    if adapter:  # tuned on the model as it writes: DITTO folded into the weights
        model = fold_in(attach_adapter(model, adapter))
    with _bar(args.steps, "step", "pause tuning") as bar:
        def progress(step: int, steps: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.3f}", refresh=False)

        meta = tune(model, tokenizer, args.corpus, args.out, config, progress,
                    command="storyloom " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                    trained_on=f"DITTO adapter {adapter}" if adapter else "the base model",
                    stage=lambda what: bar.write(what, file=sys.stderr))
    print(json.dumps({k: meta[k] for k in ("seconds", "train_passages", "held_out_loss", "train_loss")}, indent=1))
    print(f"saved to {args.out}", file=sys.stderr)
