"""`storyloom ditto train | eval | analyze`: DITTO fine-tuning and repetition measurements."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

from common.errors import InvalidInput


def _lam(text: str) -> float:
    from generation.backend import check_lambda

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    try:
        return check_lambda(value)
    except InvalidInput as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(sub) -> None:
    ditto = sub.add_parser("ditto", help="train a model out of repetition loops (DITTO) and measure repetition")
    cmds = ditto.add_subparsers(dest="ditto_command", required=True)

    train = cmds.add_parser("train", help="fine-tune with DITTO + language modelling; writes a model or adapter")
    train.add_argument("--corpus", required=True, action="append",
                       help="a plain-text file; its last --holdout share is not trained on (repeat to mix corpora)")
    train.add_argument("--out", required=True, help="a new folder for the result")
    train.add_argument("--model", help="base model (default: the embedded SmolLM2)")
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--lora", action="store_true", help="train a LoRA adapter (a few MB) instead of the whole model")
    train.add_argument("--anchor", choices=["kl", "mle"],
                       help="on ordinary text: kl keeps the base model's distribution (LoRA; the default), "
                            "mle learns the text itself (the paper's way; the default for full fine-tuning)")
    train.add_argument("--lora-rank", type=int, default=8)
    train.add_argument("--batch", type=int, default=8)
    train.add_argument("--length", type=int, default=128, help="tokens per training sequence")
    train.add_argument("--lambda", dest="lam", type=_lam, default=0.5, help="DITTO's lambda, in (0, 1]")
    train.add_argument("--holdout", type=float, default=0.25)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto, cpu or cuda (bf16 on CUDA)")

    ev = cmds.add_parser("eval", help="greedy continuations of held-out prefixes: rep-n, sentence repetition, ppl")
    _model_args(ev)
    ev.add_argument("--corpus", required=True, action="append",
                    help="a plain-text file (repeatable); its last --holdout share is used")
    ev.add_argument("--samples", type=int, default=100, help="samples per corpus")
    ev.add_argument("--holdout", type=float, default=0.25)
    ev.add_argument("--whole", action="store_true", help="use the whole of each corpus (texts never trained on)")
    ev.add_argument("--prefix", type=int, default=50, help="prefix tokens")
    ev.add_argument("--continuation", type=int, default=100, help="tokens written greedily")
    ev.add_argument("--guard", action="store_true", help="decode with the sentence-repetition guard")
    ev.add_argument("--guard-lambda", type=_lam, default=0.01)
    ev.add_argument("--repetition-penalty", type=float, default=1.0)
    ev.add_argument("--no-repeat-ngram-size", type=int, default=0)
    ev.add_argument("--dry", type=float, default=0.0, help="DRY multiplier (0: off)")
    ev.add_argument("--batch", type=int, default=16)
    ev.add_argument("--json", help="also write the results to this file")

    an = cmds.add_parser("analyze", help="probability of a repeated sentence's tokens, repetition 1..N (PNG + JSON)")
    _model_args(an)
    an.add_argument("--corpus", required=True, help="a plain-text file; sentences come from its last --holdout share")
    an.add_argument("--holdout", type=float, default=0.25)
    an.add_argument("--sentences", type=int, default=50)
    an.add_argument("--repeats", type=int, default=20)
    an.add_argument("--out", required=True, help="folder for repetition.png and repetition.json")


def _model_args(parser) -> None:
    parser.add_argument("--model", help="a model folder or .gguf (default: the embedded SmolLM2)")
    parser.add_argument("--adapter", help="a DITTO LoRA adapter folder; compared with the model without it")
    parser.add_argument("--device", default="auto")


def run(args: argparse.Namespace, settings) -> None:
    if args.ditto_command == "train":
        return _train(args, settings)
    if args.ditto_command == "eval":
        return _eval(args, settings)
    return _analyze(args, settings)


def _bar(total: int, unit: str, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, disable=False, dynamic_ncols=True)


def _train(args, settings) -> None:
    from generation.ditto import TrainConfig, train

    config = TrainConfig(steps=args.steps, lr=args.lr, batch=args.batch, length=args.length, lam=args.lam,
                         lora=args.lora, lora_rank=args.lora_rank, holdout=args.holdout, seed=args.seed,
                         anchor=args.anchor or ("kl" if args.lora else "mle"))
    config.check()
    print("loading the model and the corpus ...", file=sys.stderr, flush=True)
    with _bar(args.steps, "step", "DITTO training") as bar:
        def progress(step: int, steps: int, info: dict) -> None:
            bar.update(1)
            bar.set_postfix_str(f"{info['kind']} loss {info['loss']:.3f}", refresh=False)

        meta = train(args.model or settings.model, args.corpus, args.out, config, device=args.device,
                     progress=progress, command="storyloom " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(json.dumps({k: meta[k] for k in ("kind", "seconds", "ditto_samples", "loss")}, indent=1))
    print(f"saved to {args.out}", file=sys.stderr)


def _load(args, settings):
    from generation.adapters import attach_adapter, read_meta
    from generation.local import load_model, resolve_model

    if args.adapter:
        read_meta(args.adapter)  # a missing adapter fails before the model loads
    print("loading the model ...", file=sys.stderr, flush=True)
    model, tokenizer = load_model(resolve_model(args.model or settings.model), args.device)
    if args.adapter:
        model = attach_adapter(model, args.adapter)
    return model, tokenizer


def _eval(args, settings) -> None:
    from generation.backend import Decoding
    from generation.corpus import read_corpus
    from generation.evaluation import eval_samples, evaluate

    if args.samples < 1 or args.prefix < 1 or args.continuation < 4:
        raise InvalidInput("--samples and --prefix must be at least 1 and --continuation at least 4")
    decoding = Decoding(guard=args.guard, guard_lambda=args.guard_lambda, repetition_penalty=args.repetition_penalty,
                        no_repeat_ngram_size=args.no_repeat_ngram_size, dry_multiplier=args.dry).check()
    corpora = [read_corpus(path, args.holdout) for path in args.corpus]
    model, tokenizer = _load(args, settings)
    samples = []
    for corpus in corpora:
        text = corpus.train + corpus.held_out if args.whole else corpus.held_out
        found = eval_samples(tokenizer, text, Path(corpus.path).name, args.samples, args.prefix, args.continuation)
        if not found:
            raise InvalidInput(f"the {'text' if args.whole else 'held-out part'} of {corpus.path} is shorter than "
                               f"one sample ({args.prefix + args.continuation} tokens)")
        if len(found) < args.samples:
            print(f"note: {corpus.path} gave {len(found)} samples, not {args.samples}", file=sys.stderr)
        samples += found
    with _bar(len(samples), "sample", "evaluating") as bar:
        result = evaluate(model, tokenizer, samples, decoding, batch=args.batch,
                          progress=lambda done, total: bar.update(done - bar.n))
    result = {"model": args.model or "embedded", "adapter": args.adapter, "decoding": _public(decoding),
              "prefix_tokens": args.prefix, "continuation_tokens": args.continuation, **result}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def _public(decoding) -> dict:
    from dataclasses import asdict

    return {k: v for k, v in asdict(decoding).items() if k != "ditto"}


def _analyze(args, settings) -> None:
    from generation.adapters import adapter_off
    from generation.corpus import read_corpus, split_sentences, usable
    from generation.evaluation import repetition_curve
    from generation.plots import plot_curves

    if not 1 <= args.repeats <= 50 or args.sentences < 1:
        raise InvalidInput("--repeats must be 1 to 50 and --sentences at least 1")
    corpus = read_corpus(args.corpus, args.holdout)
    pairs = []
    for para in corpus.held_out:
        s = split_sentences(para)
        pairs += [(a, b) for a, b in zip(s, s[1:]) if usable(b) and len(b.split()) <= 30]
    pairs = pairs[:args.sentences]
    if not pairs:
        raise InvalidInput(f"the held-out part of {args.corpus} has no usable sentence pairs")
    model, tokenizer = _load(args, settings)
    curves = {}
    runs = [("base model", None)] + ([("DITTO", args.adapter)] if args.adapter else [])
    for name, adapter in runs:
        base_only = adapter is None and args.adapter
        with _bar(len(pairs), "sentence", name) as bar, (adapter_off(model) if base_only else nullcontext()):
            curves[name] = repetition_curve(model, tokenizer, pairs, args.repeats, lambda d, t: bar.update(d - bar.n))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, out / "repetition.png")
    (out / "repetition.json").write_text(json.dumps({"corpus": args.corpus, "adapter": args.adapter,
                                                      "curves": curves}, indent=1) + "\n")
    for name, c in curves.items():
        print(f"{name}: token probability by repetition "
              + " ".join(f"{v:.2f}" for v in c["token_probability"]))
    print(f"wrote {out / 'repetition.png'} and {out / 'repetition.json'}", file=sys.stderr)
