"""The `storyloom` command. Errors a person can act on become one line and exit status 1."""

from __future__ import annotations

import argparse
import re
import sys

from common.errors import StoryloomError


def _add_story_commands(sub) -> None:
    new = sub.add_parser("new", help="start a story from a premise; prints its id last")
    new.add_argument("--premise", required=True)
    new.add_argument("--title")

    step = sub.add_parser("step", help="write the next paragraph(s)")
    step.add_argument("story_id", type=int)
    choice = step.add_mutually_exclusive_group()
    choice.add_argument("--plan", type=int, help="follow plan 1, 2 or 3 (default 1)")
    choice.add_argument("--instruction", help="follow your own instruction instead")
    step.add_argument("--count", type=int, default=1, help="how many steps to write")

    auto = sub.add_parser("auto", help="write N steps unattended (a simulated human picks the plans)")
    auto.add_argument("story_id", type=int)
    auto.add_argument("--steps", type=int, default=5)

    show = sub.add_parser("show", help="print the manuscript as Markdown")
    show.add_argument("story_id", type=int)

    sub.add_parser("list", help="list the stories")


def _add_file_and_memory_commands(sub) -> None:
    export = sub.add_parser("export", help="write a story to a file: md, txt, epub, docx, pdf, or a json backup")
    export.add_argument("story_id", type=int)
    export.add_argument("--format", required=True, choices=["md", "txt", "epub", "docx", "pdf", "json"])
    export.add_argument("--out", required=True, help="a file, or a folder to write a file named after the title")
    export.add_argument("--no-vectors", action="store_true", help="json: leave the memory vectors out (smaller)")
    export.add_argument("--force", action="store_true", help="replace the file if it exists")

    imp = sub.add_parser("import", help="a json backup, or a .md/.txt draft, as a new story; prints its id last")
    imp.add_argument("path")
    imp.add_argument("--premise", help="a draft: what the story is about (default: its first sentences)")

    memory = sub.add_parser("memory", help="list a story's long-term memory, or search it as a step would")
    memory.add_argument("story_id", type=int)
    memory.add_argument("--query", help="show what retrieval returns for this text, with scores")
    memory.add_argument("--k", type=int, default=8, help="how many entries a search returns (default 8)")
    memory.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_model_commands(sub) -> None:
    from app.ditto_cli import add_parser as add_ditto

    add_ditto(sub)

    from app.sca_cli import add_parser as add_sca

    add_sca(sub)


def _add_user_commands(sub) -> None:
    user = sub.add_parser("user", help="accounts for a server with authentication on (STORYLOOM_AUTH=true)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    for command, about in (("add", "make an account"), ("passwd", "set an account's password")):
        one = user_sub.add_parser(command, help=f"{about}; the password is asked for (or read from stdin)")
        one.add_argument("name")
        one.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    user_sub.add_parser("list", help="list the accounts")
    claim = user_sub.add_parser("claim", help="give the stories that belong to nobody (written while accounts "
                                "were off) to this account")
    claim.add_argument("name")


def _add_serving_commands(sub) -> None:
    folder = sub.add_parser("model-folder", help="write the model (DITTO merged in) as a Hugging Face folder that "
                            "transformers serve or vLLM can serve")
    folder.add_argument("out", help="a new or empty folder")

    serve = sub.add_parser("serve", help="serve the web app")
    serve.add_argument("--host", help="the address to listen on (default STORYLOOM_HOST: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="the port (default STORYLOOM_PORT: 7860)")
    serve.add_argument("--allow-no-auth", action="store_true",
                       help="serve a non-loopback --host without accounts (only on a network that is yours alone)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storyloom", description="Write long fiction with a local LLM.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_story_commands(sub)
    _add_file_and_memory_commands(sub)
    _add_model_commands(sub)
    _add_user_commands(sub)
    _add_serving_commands(sub)
    return parser


class Progress:
    """Shows on stderr which part is being written and how far it got (a terminal only)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr  # read when used: stderr may have been redirected since import
        self.live = self.stream.isatty()

    def __call__(self, part: str, text: str) -> None:
        if self.live:
            self.stream.write(f"\r\033[K  writing {part.replace('_', ' ')}: {len(text.split())} words")
            self.stream.flush()

    def done(self, message: str) -> None:
        if self.live:
            self.stream.write("\r\033[K")
        print(message, file=self.stream, flush=True)


def shown(text: str) -> str:
    """Stored text (a title, a paragraph, a memory) made safe for a terminal. Text stored before the
    input checks, imported, or written by the model may hold what those checks refuse (an ANSI
    escape that clears the screen, a bell), or a lone carriage return that writes over the line:
    each becomes its escape, visible (\\x1b[2J); everything else is printed as it is."""
    from app.service.context import UNPRINTABLE

    return re.sub(f"{UNPRINTABLE.pattern}|\r(?!\n)", lambda m: m.group().encode("unicode_escape").decode(), text)


def _print_plans(plans: list[str]) -> None:
    print("\nPlans:")
    for number, plan in enumerate(plans, 1):
        print(f"  {number}. {shown(plan)}")


def _cost(view) -> str:
    c = view.last_step
    return (f"{c['seconds']:.1f} s, {c['prompt_tokens']} prompt + {c['completion_tokens']} completion tokens, "
            f"{c['retries']} retries")


def run(args: argparse.Namespace) -> None:
    from app.config import Settings
    from app.wiring import build_service, quiet_libraries

    settings = Settings()
    quiet_libraries()
    if args.command == "ditto":
        from app.ditto_cli import run as run_ditto

        return run_ditto(args, settings)
    if args.command == "sca" and args.sca_command == "pause-tune":
        from app.sca_cli import run as run_sca

        return run_sca(args, None, settings)
    if args.command == "user":
        return _user(settings, args)
    if args.command == "model-folder":
        return _model_folder(settings, args.out)
    if args.command == "serve":
        from app.ui import serve

        return serve(settings, host=args.host, port=args.port, allow_no_auth=args.allow_no_auth)
    service = build_service(settings)
    if args.command == "list":
        for story_id, title in service.list_stories():
            print(f"{story_id}\t{shown(title)}")
    elif args.command == "show":
        sys.stdout.write(shown(service.manuscript(args.story_id)))
    elif args.command == "memory":
        _memory(service, args)
    elif args.command == "sca":
        from app.sca_cli import run as run_sca

        run_sca(args, service, settings)
    elif args.command == "export":
        _export(service, args)
    elif args.command == "import":
        _import(service, args)
    elif args.command == "new":
        progress = Progress()
        view = service.new_story(args.premise, args.title, on_text=progress)
        progress.done(f"story {view.id} started ({_cost(view)})")
        print(shown(f"# {view.title}\n\n{view.paragraphs[-1]}"))
        _print_plans(view.plans)
        print(view.id)
    elif args.command == "auto":
        _auto(service, args.story_id, args.steps)
    elif args.command == "step":
        if args.count < 1:
            raise StoryloomError("--count must be at least 1")
        for number in range(1, args.count + 1):
            progress = Progress()
            plan = None if args.instruction is not None else (1 if args.plan is None else args.plan)
            view = service.step(args.story_id, plan=plan, instruction=args.instruction, on_text=progress)
            progress.done(f"step {number}/{args.count}: paragraph {len(view.paragraphs)} written ({_cost(view)})")
            print(f"\n{shown(view.paragraphs[-1])}")
            _print_plans(view.plans)


def _user(settings, args) -> None:
    from storage import accounts
    from storage.db import open_database

    db = open_database(settings.database())
    try:
        if args.user_command == "list":
            with db.Session() as session:
                for name in accounts.list_users(session):
                    print(name)
            return
        if args.user_command == "claim":
            with db.Session.begin() as session:
                count = accounts.claim_unowned(session, args.name)
            print(f"{count} stories now belong to {args.name}", file=sys.stderr)
            return
        if args.password_stdin:
            try:
                password = sys.stdin.readline().rstrip("\n")
            except UnicodeDecodeError:
                raise StoryloomError("the password on stdin is not UTF-8 text; nothing was changed") from None
        else:
            import getpass

            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                raise StoryloomError("the two passwords differ; nothing was changed")
        with db.Session.begin() as session:
            (accounts.add_user if args.user_command == "add" else accounts.set_password)(session, args.name, password)
        print(f"{'added' if args.user_command == 'add' else 'changed the password of'} {args.name}", file=sys.stderr)
    finally:
        db.close()


def _model_folder(settings, out: str) -> None:
    from pathlib import Path

    from app.wiring import ditto_adapter
    from generation.local import TransformersBackend, save_folder

    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise StoryloomError(f"{folder} is not an empty folder; nothing was written")
    backend = TransformersBackend(settings.model, "cpu", adapter=ditto_adapter(settings), weights="float32")
    model, tokenizer = backend.load()
    ditto = "DITTO merged in" if backend.has_adapter else "no DITTO"
    save_folder(model, tokenizer, folder)
    print(f"{backend.name}, {ditto}, written to {folder}; serve it with: transformers serve {folder.resolve()}",
          file=sys.stderr)
    print(folder.resolve())


def _export(service, args) -> None:
    import time
    from pathlib import Path

    started = time.perf_counter()
    done = service.manuscripts.export(args.story_id, args.format, vectors=not args.no_vectors)
    out = Path(args.out)
    if out.is_dir():
        out = out / done.filename
    try:
        with open(out, "wb" if args.force else "xb") as file:
            file.write(done.data)
    except FileExistsError:
        raise StoryloomError(f"{out} exists; pass --force to replace it") from None
    except OSError as e:
        raise StoryloomError(f"cannot write {out}: {e.strerror}") from None
    if done.notice:
        print(f"note: {done.notice}", file=sys.stderr)
    print(f"{len(done.data):,} bytes written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print(out)


def _import(service, args) -> None:
    from pathlib import Path

    from app.service.manuscripts import read_file

    path = Path(args.path)
    raw = read_file(path)
    view = service.manuscripts.import_file(path.name, raw, premise=args.premise,
                                           on_progress=lambda line: print(line, file=sys.stderr, flush=True))
    if view.notice:
        print(f"note: {view.notice}", file=sys.stderr)
    print(f"story {view.id}: {view.title!r}, {len(view.paragraphs)} paragraphs", file=sys.stderr)
    print(view.id)


def _auto(service, story_id: int, steps: int) -> None:
    from tqdm import tqdm

    start = len(service.view(story_id).paragraphs)
    with tqdm(total=steps, unit="step", desc=f"story {story_id}", disable=False, file=sys.stderr) as bar:
        def on_text(part: str, text: str) -> None:
            bar.set_postfix_str(f"{part.replace('_', ' ')}: {len(text.split())} words", refresh=True)

        def on_step(number: int, total: int, view) -> None:
            bar.update(1)
            print(f"\n{shown(view.paragraphs[-1])}", flush=True)

        view = service.auto(story_id, steps, on_text=on_text, on_step=on_step)
    print(f"{len(view.paragraphs) - start} steps written; story {story_id} has {len(view.paragraphs)} paragraphs",
          file=sys.stderr)


def _memory(service, args: argparse.Namespace) -> None:
    import json
    from dataclasses import asdict

    memories = service.memories
    if args.query is None:
        rows = memories.entries(args.story_id)
        if args.json:
            print(json.dumps([asdict(r) for r in rows], default=str, indent=1))
            return
        print("id\tkind\twhere\tflags\ttext")
        for r in rows:
            flags = ",".join(f for f, on in (("pinned", r.pinned), ("stale", r.stale)) if on)
            keys = f"[keys: {', '.join(r.keys)}] " if r.keys else ""
            print(shown(f"{r.id}\t{r.kind}\t{r.where}\t{flags or '-'}\t{keys}{r.text}"))
        return
    found = memories.search(args.story_id, args.query, args.k)
    where = found.where
    if args.json:
        print(json.dumps({"query": args.query, "k": args.k,
                          "by_meaning": [{**asdict(h), "where": where.get(h.entry_id)} for h in found.hits],
                          "by_rule": [{**asdict(e), "where": where.get(e.entry_id)} for e in found.by_rule]}, indent=1))
        return
    print("score\tcosine\twords\tid\tkind\twhere\ttext")
    for h in found.hits:
        print(shown(f"{h.score:.3f}\t{h.cosine:.3f}\t{h.words:.1f}\t{h.entry_id}\t{h.kind}\t{where.get(h.entry_id)}\t"
                    f"{h.text}"))
    for e in found.by_rule:
        print(shown(f"{e.reason}\t\t\t{e.entry_id}\t{e.kind}\t{where.get(e.entry_id)}\t{e.text}"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        run(args)
    except StoryloomError as e:
        print(f"storyloom: error: {e}", file=sys.stderr)
        return 1
    except ValidationError as e:
        problems = "; ".join(f"STORYLOOM_{'_'.join(map(str, p['loc'])).upper()}: {p['msg']}" for p in e.errors())
        print(f"storyloom: error: bad setting: {problems}", file=sys.stderr)
        return 1
    except SQLAlchemyError as e:
        from storage.db import database_reason

        print(f"storyloom: error: database error: {database_reason(e)}; nothing was written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("storyloom: interrupted; the step in progress was not saved", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
