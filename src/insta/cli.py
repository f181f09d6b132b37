"""The ``insta`` command: a thin typer + rich layer over the Python API."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from . import __version__
from .errors import InstaError

SPEC_HELP = (
    "Pool spec KIND[:ARG][?OPTION=VALUE&...]: p3:t0-train, p3:t0-train?group=dataset, "
    "niv2:DIR?split=train, jsonl:FILE?id=name&instruction=summary&label=category, csv:FILE, hf:NAME. "
    "See 'insta pools'."
)

app = typer.Typer(
    name="insta",
    help=(
        "insta-select: instruction-based task selection (INSTA) for instruction tuning.\n\n"
        "Rank the source tasks of a meta-dataset (P3/promptsource, NIV2, your own table) by how "
        "similar their instructions are to your target task's instruction, and keep the top-k.\n\n"
        + SPEC_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

out = Console(soft_wrap=False)
if not out.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    out = Console(soft_wrap=False, width=160)
err = Console(stderr=True, soft_wrap=True)  # messages stay one line each


def _progress(quiet: bool):
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet,
    )


def _version(value: bool) -> None:
    if value:
        print(f"insta-select {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    pass


@app.command()
def select(
    pool: Annotated[str, typer.Option("--pool", "-p", help="Source pool to select from. " + SPEC_HELP)],
    instruction: Annotated[Optional[list[str]], typer.Option("--instruction", "-i", help="Target instruction text (repeat for several instructions of one target).")] = None,
    target: Annotated[Optional[list[str]], typer.Option("--target", "-t", help="Target task id, looked up in --targets (or in --pool); repeat for several.")] = None,
    targets: Annotated[Optional[str], typer.Option("--targets", help="Pool spec holding the targets; without --target every task of it is a target (batch).")] = None,
    targets_file: Annotated[Optional[str], typer.Option("--targets-file", help="File of targets: .txt = one instruction per line; .jsonl/.csv = one task per row.")] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", help="How many source tasks to select (paper: 5 for P3, 70 for NIV2).")] = 5,
    aggregate: Annotated[str, typer.Option("--aggregate", "-a", help="Per-task aggregation of instruction cosines: max | mean | vote.")] = "max",
    n_instructions: Annotated[Optional[int], typer.Option("--n-instructions", help="Use only the first N instructions of each target (default: all).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", "-x", help="Task id or glob (adversarial_qa/*) never to select; repeatable.")] = None,
    exclude_label: Annotated[Optional[list[str]], typer.Option("--exclude-label", help="Label (category/cluster) never to select; repeatable.")] = None,
    exclude_siblings: Annotated[bool, typer.Option("--exclude-siblings", help="Never select tasks built on the target's own source dataset.")] = False,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Sentence-transformers id or local folder (default: packaged all-MiniLM-L6-v2).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="torch device for the encoder (default: auto).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")] = False,
    out_file: Annotated[Optional[str], typer.Option("--out", "-o", help="Also write the JSON document to this file (atomically).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Select the top-k source tasks of a pool for one or more target tasks."""
    from .api import resolve_targets, write_json_atomic
    from .encoder import Encoder
    from .pools import load_pool
    from .select import InstructionSelector, check_k

    check_k(k)
    if n_instructions is not None and n_instructions <= 0:
        raise InstaError(f"--n-instructions must be positive, got {n_instructions}")
    source = load_pool(pool)
    target_list = resolve_targets(
        source, instructions=instruction or (), target_ids=target or (), targets_spec=targets, targets_file=targets_file
    )
    encoder = Encoder(model, device=device, cache=False if no_cache else None)
    selector = InstructionSelector(encoder, aggregate=aggregate)
    with _progress(quiet) as progress:
        bar = progress.add_task(f"embedding {source.name} ({source.n_instructions} instructions)", total=None)
        selector.fit(source, progress=lambda done, total: progress.update(bar, completed=done, total=total))
        progress.update(bar, description=f"embedding {len(target_list)} target(s)", completed=0, total=None)
        selections = selector.select_many(
            target_list, k, _exclusions(exclude or (), exclude_label or (), exclude_siblings), n_instructions,
            progress=lambda done, total: progress.update(bar, completed=done, total=total),
        )
    doc = {
        "pool": pool,
        "pool_size": len(source),
        "model": encoder.describe(),
        "aggregate": aggregate,
        "k": k,
        "selections": [s.to_dict() for s in selections],
    }
    if out_file:
        write_json_atomic(out_file, doc)
    for s in selections:
        for w in s.warnings:
            err.print(f"[yellow]warning:[/] target {s.target.id}: {w}", highlight=False)
    if json_out:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    for s in selections:
        _print_selection(s)
    if not quiet and encoder.cache is not None:
        err.print(f"[dim]embeddings: {encoder.encoded} encoded, {encoder.cache.hits} from cache ({encoder.cache.path})[/]", highlight=False)


def _exclusions(values, labels, siblings):
    """--exclude values with glob characters are patterns, the rest exact ids."""
    from .select import Exclusions

    patterns = [v for v in values if any(ch in v for ch in "*?[")]
    return Exclusions([v for v in values if v not in patterns], patterns, labels, siblings)


def _short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _print_selection(s) -> None:
    title = f"top-{len(s.results)} for {s.target.id}"
    if s.target.label:
        title += f" [{s.target.label}]"
    table = Table(title=escape(title), caption=escape(f"target: {_short(s.target.instructions[0], 120)}"),
                  title_justify="left", caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("task")
    table.add_column("label")
    table.add_column("score", justify="right")
    if s.aggregate != "max":
        table.add_column("cos", justify="right")
    table.add_column("best matching instruction")
    for r in s.results:
        row = [str(r.rank), escape(r.task_id), escape(r.label or ""), f"{r.score:.3f}"]
        if s.aggregate != "max":
            row.append(f"{r.match.cosine:.3f}")
        name = f"[{r.match.source_instruction_name}] " if r.match.source_instruction_name else ""
        row.append(escape(_short(name + r.match.source_instruction)))
        table.add_row(*row)
    out.print(table)


@app.command()
def pools(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the pool readers, their options and the named pools."""
    from .pools import readers

    regs = readers()
    if json_out:
        print(json.dumps({k: {"summary": r.summary, "arg": r.arg, "options": r.options, "named": r.named,
                              "examples": r.examples} for k, r in regs.items()}, indent=2))
        return
    for kind, r in regs.items():
        table = Table(title=escape(f"{kind}: {r.summary}"), title_justify="left", show_header=True)
        table.add_column("spec part")
        table.add_column("meaning")
        rows = [(f"{kind}:ARG", r.arg)] + [(f"{kind}:{n}", d) for n, d in r.named.items()]
        rows += [(f"?{o}=", d) for o, d in r.options.items()] + [("example", ex) for ex in r.examples]
        for part, meaning in rows:
            table.add_row(escape(part), escape(meaning))
        out.print(table)


@app.command()
def tasks(
    pool: Annotated[str, typer.Option("--pool", "-p", help=SPEC_HELP)],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (with instructions).")] = False,
) -> None:
    """List the tasks of a pool (id, label, dataset, number of instructions)."""
    from .pools import load_pool

    loaded = load_pool(pool)
    if json_out:
        print(json.dumps({"pool": pool, "description": loaded.description, "tasks": [t.to_dict() for t in loaded]}, indent=2, ensure_ascii=False))
        return
    table = Table(title=escape(f"{loaded.name}: {len(loaded)} tasks, {loaded.n_instructions} instructions"),
                  title_justify="left", caption=escape(loaded.description), caption_justify="left")
    for col in ("task", "label", "dataset", "instructions", "first instruction"):
        table.add_column(col)
    for t in loaded:
        table.add_row(*(escape(x) for x in (t.id, t.label or "", t.dataset or "", str(len(t.instructions)), _short(t.texts[0], 70))))
    out.print(table)


@app.command()
def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Delete every cached embedding.")] = False,
) -> None:
    """Show (or clear) the embedding cache."""
    from .cache import EmbeddingCache
    from .paths import cache_dir

    store = EmbeddingCache(cache_dir() / "embeddings.sqlite")
    if clear:
        print(f"removed {store.clear()} embeddings from {store.path}")
    else:
        print(f"{store.path}: {store.count()} embeddings")


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    try:
        app()  # standalone: usage errors print usage and exit 2
    except InstaError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        sys.exit(130)
