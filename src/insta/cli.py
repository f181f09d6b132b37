"""The ``insta`` command: a thin typer + rich layer over the Python API."""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import __version__
from .config import AlignConfig, FeatureConfig, MixConfig, TrainConfig
from .errors import InstaError, Terminated, printable
from .calibrate import DEFAULT_CALIBRATION
from .selectors import DEFAULT_METHOD

SPEC_HELP = (
    "Pool spec KIND[:ARG][?OPTION=VALUE&...]: p3:t0-train, p3:t0-train?group=dataset, "
    "niv2:DIR?split=train, bigbench:t0-eval, jsonl:FILE?id=name&instruction=summary&label=category, csv:FILE, hf:NAME. "
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

class _Lazy:
    """A rich object built on first use: a command that prints only JSON never imports rich's
    console and table machinery (~20 ms of start-up)."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self._obj = make, None

    def resolve(self) -> Any:
        """The object itself (for code that needs a real Console: rich's Live enters it as a context)."""
        if self._obj is None:
            self._obj = self._make()
        return self._obj

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resolve(), name)

    def __enter__(self) -> Any:  # dunders are looked up on the type, never through __getattr__
        return self.resolve().__enter__()

    def __exit__(self, *exc) -> Any:
        return self.resolve().__exit__(*exc)


def _out_console():
    from rich.console import Console

    console = Console(soft_wrap=False)
    # piped or captured: do not squeeze tables into 80 columns
    return console if console.is_terminal else Console(soft_wrap=False, width=160)


def _err_console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)  # messages stay one line each


out = _Lazy(_out_console)
err = _Lazy(_err_console)


def escape(text: str) -> str:
    """Text from data for rich: its control characters shown escaped, its [markup] literal."""
    from rich.markup import escape as rich_escape

    return rich_escape(printable(text))


def Table(*args: Any, **kwargs: Any):  # noqa: N802 - rich's Table, imported when a table is printed
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


#: click's exceptions, wherever this typer takes click from (its own copy, or the package)
_CLICK = sys.modules[typer.BadParameter.__module__]

#: where --json documents go: the real standard output, while everything else that a command
#: (or a library under it, such as the Trainer's log lines) prints is sent to stderr
_json_stream = None


class _StdoutClosed(BaseException):
    """The reader of standard output went away (``insta ... | head``): an early close, which
    ends the command quietly (exit 0), like any tool whose output is cut by its reader. A
    BaseException, so that no ``except Exception`` (nor click's broken-pipe exit 1) takes it."""


class _StdoutFailed(InstaError):
    """Standard output cannot be written (a full disk, a quota, an I/O error): the output is
    incomplete, and the command says so in one line instead of exiting 0."""

    def __init__(self, reason: str):
        self.strerror = reason
        super().__init__(f"cannot write the standard output ({reason}): the output is incomplete; free some space "
                         "(or write it elsewhere) and run the command again")


def _silence_stdout(stream=None) -> None:
    """Point standard output's descriptor at /dev/null: what is still buffered goes nowhere,
    quietly, at exit. (Not ``sys.stdout``'s: under --json that is stderr.)"""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = (stream or _json_stream or sys.stdout).fileno()
        if fd == 2:
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


def _stdout_failure(exc: BaseException, stream) -> BaseException:
    _silence_stdout(stream)
    if isinstance(exc, BrokenPipeError):
        return _StdoutClosed()
    return _StdoutFailed(exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))


class _Stdout:
    """Standard output that never stops short in silence. Python's unbuffered stdout
    (PYTHONUNBUFFERED, -u) ignores partial writes, so a full disk cut the output at the first
    one with no error and exit 0: here it is always written through a buffered writer, which
    writes all or raises. A write that fails is one error line (:class:`_StdoutFailed`); a
    reader that went away is an early close (:class:`_StdoutClosed`)."""

    def __init__(self, stream):
        import io

        buffer = stream.buffer
        raw = isinstance(buffer, io.RawIOBase)
        self._stream = io.TextIOWrapper(io.BufferedWriter(buffer) if raw else buffer, encoding=stream.encoding,
                                        errors="backslashreplace", line_buffering=raw or stream.line_buffering)
        self._original = stream  # kept alive: it shares the descriptor
        # the first failure, kept: should some ``except InstaError`` on the way swallow it (the
        # descriptor then points at /dev/null, so later writes succeed), the command still
        # does not end in a silent exit 0 (see main)
        self.failure: BaseException | None = None

    def _failed(self, exc: OSError) -> BaseException:
        failure = _stdout_failure(exc, self._stream)
        if self.failure is None:
            self.failure = failure
        return failure

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _guard_stdout() -> None:
    """Wrap the process's real standard output (not one a test or a caller put in its place)."""
    import io

    if sys.stdout is not None and sys.stdout is sys.__stdout__ and isinstance(sys.stdout, io.TextIOWrapper):
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        sys.stdout = _Stdout(sys.stdout)


def _print_json(doc) -> None:
    from .io import dumps

    stream = _json_stream or sys.stdout
    stream.write(dumps(doc) + "\n")  # strict JSON: NaN and infinities become null
    stream.flush()


class _WarningLines(logging.Handler):
    """insta's warnings (the ``insta`` logger) as one ``warning:`` line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[yellow]warning:[/] {escape(record.getMessage())}", highlight=False)


def _say(quiet: bool) -> Callable[[str], None]:
    """Progress messages on stderr, or nothing under --quiet."""
    return (lambda msg: None) if quiet else (lambda msg: err.print(f"[dim]{escape(msg)}[/]"))


class _NoProgress:
    """What --quiet (or no terminal) gets instead of rich's Progress: the same calls, no output."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def update(self, *args, **kwargs) -> None:
        return None


def _progress(quiet: bool):
    if quiet or not err.is_terminal:  # no bars (nor their blank line) in logs and pipes
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err.resolve(),
        transient=True,
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
    pool: Annotated[list[str], typer.Option("--pool", "-p", help="Source pool to select from; repeat for a union of pools (P3 and NIV2 and your own table), each result naming its pool. " + SPEC_HELP)],
    instruction: Annotated[Optional[list[str]], typer.Option("--instruction", "-i", help="Target instruction text (repeat for several instructions of one target).")] = None,
    target: Annotated[Optional[list[str]], typer.Option("--target", "-t", help="Target task id, looked up in --targets (or in --pool); repeat for several.")] = None,
    targets: Annotated[Optional[str], typer.Option("--targets", help="Pool spec holding the targets; without --target every task of it is a target (batch).")] = None,
    targets_file: Annotated[Optional[str], typer.Option("--targets-file", help="File of targets: .txt = one instruction per line; .jsonl/.csv = one task per row.")] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", help="How many source tasks to select (paper: 5 for P3, 70 for NIV2).")] = 5,
    calibrate: Annotated[str, typer.Option("--calibrate", help="Several --pool: how scores compare across the pools' instruction styles: zscore (default: standardised within each pool) | rank (pools interleaved by rank) | none (raw).")] = DEFAULT_CALIBRATION,
    per_source_k: Annotated[Optional[int], typer.Option("--per-source-k", help="Several --pool: take this many tasks from each pool instead of -k overall.")] = None,
    method: Annotated[str, typer.Option("--method", help="hybrid (default: BM25 and INSTA fused by reciprocal rank, the best label-free method in BENCHMARKS.md) | insta | bm25 | random | all; from the target's examples: less (LM gradients) | rds (LM hidden states) | hybrid-less | hybrid-rds | samples; NAME:AGG also works.")] = DEFAULT_METHOD,
    aggregate: Annotated[Optional[str], typer.Option("--aggregate", "-a", help="Per-task aggregation of instruction similarities: max (default) | mean | vote.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for random and samples.")] = 0,
    n_instructions: Annotated[Optional[int], typer.Option("--n-instructions", help="Use only the first N instructions of each target (default: all).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", "-x", help="Task id or glob (adversarial_qa/*) never to select; repeatable.")] = None,
    exclude_label: Annotated[Optional[list[str]], typer.Option("--exclude-label", help="Label (category/cluster) never to select; repeatable.")] = None,
    exclude_siblings: Annotated[bool, typer.Option("--exclude-siblings", help="Never select tasks built on the target's own source dataset.")] = False,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Sentence-transformers id or local folder (default: packaged all-MiniLM-L6-v2).")] = None,
    index: Annotated[Optional[str], typer.Option("--index", help="With --method insta: flat (exact, default) | faiss (exact FAISS IndexFlatIP) | faiss:FACTORY (e.g. faiss:HNSW32, approximate); FAISS needs the faiss extra.")] = None,
    embed_engine: Annotated[str, typer.Option("--embed-engine", help="local (default) | ray: embed (or, for less/rds, featurise) the pool's uncached texts on Ray Data (the ray extra; RAY_ADDRESS names a cluster, else a local instance).")] = "local",
    ray_actors: Annotated[int, typer.Option("--ray-actors", help="With --embed-engine ray: encoder actors (one model each).")] = 1,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache (nor, for less/rds, the cached example vectors).")] = False,
    device: Annotated[Optional[str], typer.Option("--device", help="torch device for the encoder and the LM (default: auto).")] = None,
    lm: Annotated[str, typer.Option("--lm", help="less/rds/hybrid-less/hybrid-rds: the causal LM whose gradients or hidden states represent examples: smollm2 (default), a model folder, a .gguf file or a hub id.")] = FeatureConfig.lm,
    budget: Annotated[Optional[int], typer.Option("--budget", help="less/rds/samples: select this many examples (round-robin over the target's examples) instead of k tasks.")] = None,
    target_examples: Annotated[Optional[str], typer.Option("--target-examples", help="JSONL of the target's examples ({\"input\": ..., \"output\": ...} per line) for less/rds; default: the target task's own instances.")] = None,
    examples_per_task: Annotated[Optional[int], typer.Option("--examples-per-task", help=f"less/rds/samples: examples sampled (seeded) from each source task (default: {FeatureConfig.per_task}; samples 100).")] = None,
    query_examples: Annotated[Optional[int], typer.Option("--query-examples", help=f"less/rds/samples: at most this many target examples are used, and recorded: never evaluate on them (default: {FeatureConfig.query_examples}; samples 32).")] = None,
    proj_dim: Annotated[int, typer.Option("--proj-dim", help="less: dimensions of the gradient projection (LESS: 8192).")] = FeatureConfig.proj_dim,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")] = False,
    out_file: Annotated[Optional[str], typer.Option("--out", "-o", help="Also write the JSON document to this file (atomically); FILE.jsonl streams one selection per line (for big batches).")] = None,
    report_file: Annotated[Optional[str], typer.Option("--report", help="Also write the selection as one self-contained web page (see insta report).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Select the top-k source tasks of a pool for one or more target tasks."""
    from .api import resolve_targets
    from .io import check_out, write_json_atomic
    from .encoder import Encoder
    from .pools import load_pool
    from .checks import check_int, check_seed
    from .select import check_k
    from .selectors import make_selector
    from .select import match_floor, weak_match
    from .calibrate import CalibratedSelector, for_union
    from .pools import pool_field

    check_k(k)
    check_seed(seed)
    if out_file is not None:
        check_out(out_file)
        _not_an_input(out_file, [*pool, targets, targets_file])
    if report_file is not None:
        check_out(report_file, "--report")
        _not_an_input(report_file, [*pool, targets, targets_file, out_file], "--report")
        _different_outputs([(out_file, "--out"), (report_file, "--report")])
    if n_instructions is not None:
        check_int(n_instructions, "--n-instructions", min=1)
    check_int(ray_actors, "--ray-actors", min=1)
    if ray_actors != 1 and embed_engine != "ray":
        raise InstaError("--ray-actors sets the encoder actors of --embed-engine ray; add --embed-engine ray (or drop it)")
    from .selectors import METHODS, parse_method

    name = parse_method(method, aggregate)[0]
    sizes = {k: v for k, v in (("per_task", examples_per_task), ("query_examples", query_examples)) if v is not None}
    if (target_examples is not None or sizes) and not METHODS.get(name).examples:
        used = "--target-examples" if target_examples is not None else "--examples-per-task/--query-examples"
        raise InstaError(f"{used} applies to the methods that select from examples "
                         f"({', '.join(n for n, m in METHODS.items() if m.examples)}); --method {name} reads instructions")
    encoder = Encoder(model, device=device, cache=False if no_cache else None, engine=embed_engine, ray_actors=ray_actors)
    source = load_pool(pool)
    target_list = resolve_targets(
        source, instructions=instruction or (), target_ids=target or (), targets_spec=targets, targets_file=targets_file
    )
    if target_examples is not None:
        from dataclasses import replace

        from .examples import read_examples

        if len(target_list) != 1:
            raise InstaError(f"--target-examples gives the examples of one target; this command has {len(target_list)} "
                             "targets (select them one at a time)")
        target_list = [replace(target_list[0], examples=read_examples(target_examples, target_list[0].id))]
    features = FeatureConfig(lm=lm, proj_dim=proj_dim, seed=seed, device=device or "auto", engine=embed_engine,
                             actors=ray_actors, **sizes)
    selector = for_union(make_selector(method, aggregate=aggregate, encoder=encoder, seed=seed, index=index,
                                       features=features, budget=budget, sizes=sizes), pool, calibrate, per_source_k)
    side = getattr(selector, "examples", selector)  # hybrid-less/-rds: the example side
    if no_cache and hasattr(side, "representation") and hasattr(side.representation, "cache"):
        side.representation.cache = None  # --no-cache: the model-aware vectors too
    with _progress(quiet) as progress:
        bar = progress.add_task(f"indexing {source.name} ({source.n_instructions} instructions)", total=None)
        selector.fit(source, progress=lambda done, total: progress.update(bar, completed=done, total=total))
        progress.update(bar, description=f"selecting for {len(target_list)} target(s)", completed=0, total=None)
        floor = None
        if name not in ("random", "all") and not METHODS.get(name).examples and budget is None:
            progress.update(bar, description="how strong a match this pool usually offers")
            floor = match_floor(selector)
        stream = (weak_match(s, floor) for s in selector.iter_select(
            target_list, k, _exclusions(exclude or (), exclude_label or (), exclude_siblings), n_instructions,
            progress=lambda done, total: progress.update(bar, completed=done, total=total),
        ))
        head = {"pool": pool_field(pool), "pool_size": len(source), "model": encoder.describe(), "method": selector.method,
                "aggregate": selector.aggregate, "k": k}
        if floor is not None:
            head["match_floor"] = floor
        if hasattr(selector, "describe"):  # selection from examples: the representation, what it cost
            head["representation"] = selector.describe()
        if budget is not None:
            head["budget"] = budget
        if isinstance(selector, CalibratedSelector):
            head["calibrate"] = selector.how
            if per_source_k is not None:
                head["per_source_k"] = per_source_k
                head["k"] = per_source_k * len(selector.origins)  # what was asked for (-k does not apply)
        if out_file and Path(out_file).suffix.lower() == ".jsonl":
            n = _stream_jsonl(out_file, stream, pool_field(pool), tables=not json_out)
            if report_file:
                from .report import load_report, write_report

                write_report(load_report(out_file), report_file)
            if json_out:
                _print_json({**head, "out": out_file, "targets": n})
            return
        selections = list(stream)
    doc = {**head, "selections": [s.to_dict() for s in selections]}
    if out_file:
        write_json_atomic(out_file, doc)
    if report_file:
        from .report import Report, pool_map, write_report

        embeds = name in ("insta", "hybrid") and len(source) > 2
        write_report(Report("selection", out_file or "insta select", doc), report_file,
                     pool_map_svg=pool_map(source, encoder, doc["selections"]) if embeds else "")
    for s in selections:
        _warn(s)
    if json_out:
        _print_json(doc)
        return
    for s in selections:
        _print_selection(s)
    if not quiet and encoder.cache is not None and (encoder.encoded or encoder.cache.hits):
        unused = ": not used" if encoder.cache.disabled else ""
        err.print(f"[dim]embeddings: {encoder.encoded} encoded, {encoder.cache.hits} from cache ({encoder.cache.path}{unused})[/]",
                  highlight=False)


def _not_an_input(out_file: str, inputs: list[str | None], what: str = "--out") -> None:
    """--out must not name a file the command reads (a pool, targets, selection or rows file),
    nor lie inside a folder it reads (a NIV2 checkout, a BIG-bench source, P3 rows), nor in
    insta's own cache (the embedding database, stored vectors)."""
    from urllib.parse import parse_qsl

    from .io import outside_cache

    out_path = outside_cache(out_file, what)
    resolved = out_path.expanduser().resolve()
    for spec in filter(None, inputs):
        body, _, query = spec.partition("?")
        candidates = {body, body.partition(":")[2], *(v for _, v in parse_qsl(query))}
        for candidate in filter(None, candidates):
            path = Path(candidate).expanduser()
            try:
                if path.is_dir():
                    inside = resolved.is_relative_to(path.resolve())
                else:
                    inside = out_path.exists() and path.exists() and os.path.samefile(path, out_path)
            except (OSError, ValueError):
                inside = False
            if inside:
                raise InstaError(f"{what} {out_file} is {'inside ' if path.is_dir() else ''}an input of this command "
                                 f"({spec}); give another path")


def _different_outputs(written: list[tuple[str | None, str]]) -> None:
    """The files a command writes (--out, --plot, --report) must be different files."""
    given = [(p, what) for p, what in written if p]
    where = [Path(p).expanduser().resolve() for p, _ in given]
    if len(set(where)) < len(where):
        raise InstaError(f"{' and '.join(w for _, w in given)} must name different files")


def _warn(selection) -> None:
    for w in selection.warnings:
        err.print(f"[yellow]warning:[/] {escape(f'target {selection.target.id}: {w}')}", highlight=False)


def _stream_jsonl(out_file: str, stream, pool: str | list[str], *, tables: bool) -> int:
    """--out FILE.jsonl: one selection per line, written as each target is done (memory stays
    flat for any number of targets); the file appears, whole, only when every line is written."""
    from .io import atomic_path, dumps

    n = 0
    show = tables
    stdout_error: OSError | None = None
    with atomic_path(out_file) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for s in stream:
            fh.write(dumps({"pool": pool, **s.to_dict()}, indent=None) + "\n")
            _warn(s)
            if show:
                try:
                    _print_selection(s)
                except (OSError, SystemExit, _StdoutClosed, _StdoutFailed) as exc:  # `| head`, a full disk:
                    show = False  # the tables stop, the file is still written whole
                    stdout_error = exc if isinstance(exc, (_StdoutFailed, OSError)) and not isinstance(exc, BrokenPipeError) else None
                    _silence_stdout()
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    if stdout_error is not None:
        raise InstaError(f"cannot print the tables ({stdout_error.strerror or stdout_error}); the selections are "
                         f"in {out_file}, whole")
    return n


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
    union = any(r.origin for r in s.results)  # a union of pools: each result's pool, its raw similarity
    table.add_column("#", justify="right")
    table.add_column("task")
    if union:
        table.add_column("pool")
    table.add_column("label")
    table.add_column("score", justify="right")
    show_sim = s.aggregate not in ("max", "") or union
    fused = any(r.match and r.match.parts for r in s.results)
    picked = any(r.examples for r in s.results)
    if s.target_examples is not None:
        table.caption += escape(f"\n{len(s.target_examples)} target example(s) seen by the selector (recorded in the "
                                "JSON: never evaluate on them)")
    if show_sim:
        table.add_column("best pair", justify="right")
    if fused:  # hybrid: each side's best pair and its rank among the pool's tasks
        table.add_column(" · ".join(f"{p['measure'].partition('(')[2].rstrip(')') or p['measure']} (rank)" for p in next(
            r.match.parts for r in s.results if r.match and r.match.parts)), justify="right")
    if picked:
        table.add_column("examples", justify="right")
    table.add_column("best matching example" if s.target_examples is not None else "best matching instruction")
    for r in s.results:
        row = [str(r.rank), escape(r.task_id), *([escape(_short(r.origin or "", 40))] if union else []),
               escape(r.label or ""), f"{r.score:.3f}"]
        if show_sim:
            row.append(f"{r.match.similarity:.3f}" if r.match else "")
        if fused:
            row.append(" · ".join(f"{p['similarity']:.2f} (#{p['rank']})" for p in (r.match.parts if r.match else [])))
        if picked:
            row.append(str(len(r.examples or [])))
        if r.match:
            name = f"[{r.match.source_instruction_name}] " if r.match.source_instruction_name else ""
            row.append(escape(_short(name + r.match.source_instruction)))
        else:
            row.append("")
        table.add_row(*row)
    out.print(table)


@app.command()
def bench(
    suite: Annotated[Optional[str], typer.Option("--suite", "-s", help="p3 | p3-grouped | p3-extra | niv2 | niv2-files | cross (see 'insta bench --list').")] = None,
    pool: Annotated[Optional[list[str]], typer.Option("--pool", "-p", help="Benchmark on your own labelled pool instead (leave-one-out, relevant = same label); repeat for a union of pools.")] = None,
    calibrate: Annotated[str, typer.Option("--calibrate", help="A union pool (several --pool, the cross suite): how scores compare across its pools: zscore (default) | rank | none.")] = DEFAULT_CALIBRATION,
    label_field: Annotated[Optional[str], typer.Option("--label-field", help="With --pool: take labels from this field of the tasks (e.g. domains, dataset).")] = None,
    methods: Annotated[Optional[str], typer.Option("--methods", help="Comma-separated methods, NAME or NAME:AGG (default: the suite's: random,bm25,insta,insta:mean,insta:vote).")] = None,
    folds: Annotated[int, typer.Option("--folds", help="K-fold by task (siblings kept together): each target ranks only its own held-out fold. 0 = whole pool.")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed for random, samples, folds and the bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95% CIs.")] = 1000,
    niv2: Annotated[Optional[str], typer.Option("--niv2", help="NIV2 data: a tasks.jsonl table, a folder holding one, or a natural-instructions checkout (default: $INSTA_DATA/niv2 or ../shared/data/niv2).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Sentence-transformers id or folder for insta/samples (default: packaged all-MiniLM-L6-v2).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")] = False,
    per_label: Annotated[bool, typer.Option("--per-label", help="Also print the per-label breakdown.")] = False,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write a plot of the figures with their CIs (.png, .svg or .pdf).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")] = False,
    out_file: Annotated[Optional[str], typer.Option("--out", "-o", help="Also write the JSON document (with per-target values) to this file.")] = None,
    report_file: Annotated[Optional[str], typer.Option("--report", help="Also write the result as one self-contained web page (see insta report).")] = None,
    n_instructions: Annotated[Optional[int], typer.Option("--n-instructions", help="Targets use only their first N instructions (the paper's prompt-count ablation; default: all).")] = None,
    align_epochs: Annotated[Optional[int], typer.Option("--align-epochs", help="Epochs for insta-aligned-* (default: the recipe's).")] = None,
    lm: Annotated[str, typer.Option("--lm", help="less/rds: the causal LM whose gradients or hidden states represent examples (default: smollm2).")] = FeatureConfig.lm,
    list_suites: Annotated[bool, typer.Option("--list", help="List the suites and methods, then exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Benchmark selectors: does each one rank the tasks related to a target first? (P@5, P@10, MAP, nDCG@10 with 95% CIs)"""
    from .io import check_out, strict_json, write_json_atomic
    from .bench import SUITES, build_suite, run_bench
    from .checks import check_int, check_seed
    from .encoder import Encoder
    from .selectors import METHODS

    written = [(p, what) for p, what in ((out_file, "--out"), (plot, "--plot"), (report_file, "--report")) if p]
    for path, what in written:
        check_out(path, what)
        _not_an_input(path, [*(pool or []), niv2], what)
    _different_outputs(written)
    if plot:
        from .bench.plot import plot_format

        plot_format(plot)

    if list_suites:
        for name, suite_entry in SUITES.items():
            print(f"suite  {name:<12} {suite_entry.summary}")
        for name, method in METHODS.items():
            print(f"method {name:<12} {method.summary}")
        return
    check_int(bootstrap, "--bootstrap", min=1, max=100_000)
    if n_instructions is not None:
        check_int(n_instructions, "--n-instructions", min=1)
    check_int(folds, "--folds", min=0, max=10_000)
    if align_epochs is not None:
        check_int(align_epochs, "--align-epochs", min=1)
    check_seed(seed)
    method_list = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    if method_list is not None and not method_list:
        raise InstaError("--methods is empty; give e.g. --methods random,bm25,insta")
    if method_list:
        from .selectors import parse_method

        for m in method_list:
            parse_method(m)
    the_suite = build_suite(suite, pool=pool, niv2=niv2, label_field=label_field)
    encoder = Encoder(model, cache=False if no_cache else None)
    with _progress(quiet) as progress:
        bar = progress.add_task("benchmark", total=None)
        result = run_bench(the_suite, method_list, encoder=encoder, folds=folds, seed=seed, n_boot=bootstrap,
                           align_config={"epochs": align_epochs} if align_epochs is not None else None, n_instructions=n_instructions,
                           features=FeatureConfig(lm=lm, seed=seed), calibrate=calibrate,
                           progress=lambda what, done, total: progress.update(bar, description=what, completed=done, total=total))
    if plot:
        from .bench.plot import plot_result

        plot_result(result, plot)
    if out_file:
        write_json_atomic(out_file, result.to_dict(per_target=True))
    if report_file:
        from .report import Report, write_report

        write_report(Report("bench", out_file or "insta bench", strict_json(result.to_dict(per_target=True))), report_file)
    if json_out:
        _print_json(result.to_dict())
        return
    _print_bench(result, per_label)


def _print_bench(result, per_label: bool) -> None:
    from .bench import METRICS

    folds = f"; {result.folds}-fold (targets rank their own held-out fold)" if result.folds else ""
    calibrated = f"; scores across pools: {result.calibrate}" if result.calibrate else ""
    table = Table(title=escape(f"{result.suite}: {result.n_scored} targets scored of {result.n_targets}, "
                               f"{result.n_tasks} tasks{folds}{calibrated}"),
                  caption=escape(result.description + "".join(f"\nnote: {n}" for n in result.notes)),
                  title_justify="left", caption_justify="left")
    table.add_column("method")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    refs = list(result.paired)
    for ref in refs:
        table.add_column(f"ΔMAP vs {ref}", justify="right")
    table.add_column("s", justify="right")
    best = result.best()
    for m in result.methods:
        if m.skipped:
            table.add_row(escape(m.method), *(["—"] * len(METRICS)), *([""] * len(refs)), "")
            continue
        cells = [f"{m.metrics[k]:.3f} [{m.ci[k][0]:.3f}, {m.ci[k][1]:.3f}]" for k in METRICS]
        extra = []
        for ref in refs:
            d = result.paired[ref].get(m.method, {}).get("MAP")
            mark = "" if d is None else "[green]+[/]" if d[1] > 0 else "[red]−[/]" if d[2] < 0 else " "
            extra.append(escape(result.delta(ref, m.method)) + mark)
        name = f"[bold]{escape(m.method)}[/]" if best is not None and m is best else escape(m.method)
        table.add_row(name, *cells, *extra, f"{m.seconds:.1f}")
    out.print(table)
    if refs:
        out.print("ΔMAP: paired bootstrap over targets; + / − mark a 95% CI that excludes 0 (better / worse than the reference).",
                  highlight=False)
    for m in result.methods:
        if m.skipped:
            err.print(f"[yellow]skipped[/] {m.method}: {escape(m.skipped)}")
    if per_label:
        done = [m for m in result.methods if m.skipped is None]
        labels = sorted({lab for m in done for lab in m.per_label})
        t = Table(title="MAP per label", title_justify="left")
        t.add_column("label")
        for m in done:
            t.add_column(escape(m.method), justify="right")
        for lab in labels:
            t.add_row(escape(lab or "(none)"), *(f"{m.per_label.get(lab, {}).get('MAP', float('nan')):.3f}" for m in done))
        out.print(t)


@app.command()
def align(
    pool: Annotated[list[str], typer.Option("--pool", "-p", help="The pool whose instruction style to learn; repeat to align on a union of pools (several styles at once). " + SPEC_HELP)],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="New folder for the aligned sentence-transformers model (re-run to resume).")],
    base: Annotated[Optional[str], typer.Option("--base", help="Model to start from (default: packaged all-MiniLM-L6-v2; the paper: sentence-transformers/bert-large-nli-stsb-mean-tokens).")] = None,
    recipe: Annotated[str, typer.Option("--recipe", help="contrastive (default: MultipleNegativesRankingLoss, the better of the two on P3 folds) | paper (CosineSimilarityLoss, the authors' settings).")] = AlignConfig.recipe,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs (default: the recipe's: paper 5, contrastive 3).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: paper 1e-6, contrastive 2e-5).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size (default 16).")] = None,
    view: Annotated[str, typer.Option("--view", help="Positive pairs: auto | instructions (same task) | labels (same label) | self (definition vs its example).")] = AlignConfig.view,
    negative_threshold: Annotated[float, typer.Option("--negative-threshold", help="A negative's cosine to its anchor under the base model must be below this (paper: 0.3; raise it for models whose cosines run high).")] = AlignConfig.negative_threshold,
    max_pairs_per_task: Annotated[int, typer.Option("--max-pairs-per-task", help="Same-task instruction pairs per task at most (a seeded sample beyond), so that tasks with hundreds of instructions do not swamp the rest.")] = AlignConfig.max_pairs_per_task,
    max_seq_length: Annotated[int, typer.Option("--max-seq-length", help="Training inputs are cut to this many tokens (cost); the saved model, and its dev figures, use the base's own length.")] = AlignConfig.max_seq_length,
    seed: Annotated[int, typer.Option("--seed", help="Seed for pair sampling, the dev split and training.")] = 0,
    keep_base: Annotated[bool, typer.Option("--keep-base/--no-keep-base", help="Keep the base model when no epoch beats it on the dev split (default), or always the best epoch.")] = AlignConfig.keep_base,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Align the embedder to a meta-dataset's instruction style; writes a sentence-transformers model folder."""
    from dataclasses import asdict

    from .align import align as run_align
    from .io import outside_cache
    from .pools import load_pool

    outside_cache(out_dir, "--out")
    cfg = AlignConfig(recipe=recipe, base=base, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, view=view,
                      negative_threshold=negative_threshold, keep_base=keep_base, max_pairs_per_task=max_pairs_per_task,
                      max_seq_length=max_seq_length)
    loaded = load_pool(pool)
    say = _say(quiet)
    result = run_align(loaded, out_dir, cfg, quiet=quiet or json_out, log=say)  # libraries' own logs: never with --json
    if json_out:
        _print_json(asdict(result))
        return
    table = Table(title=escape(f"aligned {loaded.name} → {result.model_dir}"), title_justify="left",
                  caption=escape(f"recipe {cfg.recipe}, views {', '.join(result.views)}, {result.n_train_examples} "
                                 f"training examples, {result.seconds:.0f} s; kept: {result.best or 'last epoch'}"),
                  caption_justify="left")
    table.add_column("model")
    table.add_column("dev cosine-Pearson (held-out tasks)", justify="right")
    for name, value in result.dev_pearson.items():
        table.add_row(name, f"{value:.4f}")
    out.print(table)
    out.print(escape(f"use it: insta select --model {result.model_dir} ..."), highlight=False)


@app.command()
def mix(
    selection: Annotated[str, typer.Option("--selection", "-s", help="An 'insta select --out' JSON file.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="New folder for the mixture (dataset/, mixture.jsonl, manifest.json).")],
    pool: Annotated[Optional[list[str]], typer.Option("--pool", "-p", help="Pool the tasks come from (default: the one recorded in the selection); repeat for a union. " + SPEC_HELP)] = None,
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="Which target's selection, when the file holds several.")] = None,
    per_task_cap: Annotated[int, typer.Option("--per-task-cap", help="At most this many examples per task (seeded sample; the paper: 5000).")] = MixConfig.per_task_cap,
    total_examples: Annotated[Optional[int], typer.Option("--total-examples", help="At most this many examples in all, drawn evenly across the tasks (an equal budget for every selection).")] = None,
    format: Annotated[str, typer.Option("--format", help="NIV2 encoding: def (Definition + input) | def+pos (plus 2 positive examples, as Tk-Instruct).")] = MixConfig.format,
    rows: Annotated[Optional[str], typer.Option("--rows", help="P3 rows from local JSONL files DIR/<entry>.jsonl instead of datasets.load_dataset.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling examples and templates.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Build the training mixture of a selection (a Hugging Face dataset on disk, plus JSONL)."""
    from .pipeline import mix_selection
    from .pools import pool_field

    _not_an_input(out_dir, [selection, rows, *(pool or [])])  # (the cache folder too)
    mixture = mix_selection(selection, out_dir, MixConfig(per_task_cap=per_task_cap, format=format, seed=seed,
                                                          total_examples=total_examples),
                            pool=pool_field(pool) if pool else None, target=target, rows=rows)
    manifest = mixture.manifest()
    for warning in manifest["warnings"]:
        _say(quiet)(f"warning: {warning}")
    if json_out:
        _print_json(manifest)
        return
    table = Table(title=escape(f"mixture → {out_dir}: {manifest['n_examples']} examples"), title_justify="left",
                  caption=escape(f"format {format}, cap {per_task_cap}/task, seed {seed}; "
                                 f"{manifest['dropped_duplicates']} exact duplicates dropped"), caption_justify="left")
    table.add_column("task")
    table.add_column("examples", justify="right")
    for task_id, n in manifest["tasks"].items():
        table.add_row(escape(task_id), str(n))
    out.print(table)


@app.command("train")
def train_cmd(
    mixture: Annotated[str, typer.Option("--mixture", "-m", help="A folder written by insta mix.")],
    model: Annotated[str, typer.Option("--model", help="Model id, folder, GGUF file or short name (smollm2: the packaged SmolLM2-135M-Instruct): a seq2seq LM (T5 family; the paper: google/t5-xl-lm-adapt) or a causal LM.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="New folder for the trained model (re-run to resume).")],
    epochs: Annotated[float, typer.Option("--epochs", help="Epochs (the paper: 3).")] = TrainConfig.epochs,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: the paper's, 1e-4 for P3 mixtures, 5e-5 for NIV2).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Per-device batch size.")] = TrainConfig.batch_size,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Gradient accumulation steps.")] = TrainConfig.grad_accum,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after this many steps (overrides --epochs when > 0).")] = TrainConfig.max_steps,
    max_input_length: Annotated[int, typer.Option("--max-input-length", help="Input tokens (the paper: 768).")] = TrainConfig.max_input_length,
    max_target_length: Annotated[int, typer.Option("--max-target-length", help="Target tokens (the paper: 256).")] = TrainConfig.max_target_length,
    lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (peft) instead of all weights; merged into the saved model.")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = TrainConfig.lora_r,
    bf16: Annotated[Optional[bool], typer.Option("--bf16/--no-bf16", help="bf16 mixed precision (default: on where CUDA supports it).")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Default: on with CUDA.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")] = TrainConfig.device,
    seed: Annotated[int, typer.Option("--seed", help="Training seed.")] = TrainConfig.seed,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Instruction-tune a model on a mixture (full fine-tuning or LoRA; seq2seq or causal)."""
    from dataclasses import asdict

    from .io import outside_cache
    from .train import train

    outside_cache(out_dir, "--out")
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps,
                      max_input_length=max_input_length, max_target_length=max_target_length, lora=lora, lora_r=lora_r,
                      bf16=bf16, gradient_checkpointing=gradient_checkpointing, device=device, seed=seed)
    say = _say(quiet)
    result = train(mixture, model, out_dir, cfg, quiet=quiet or json_out, say=say)  # the Trainer's bars and logs too
    if json_out:
        _print_json(asdict(result))
        return
    loss = f"{result.train_loss:.4f}" if result.train_loss is not None else "n/a"
    out.print(escape(f"trained {result.kind} model → {result.model_dir}: {result.steps} steps on {result.n_examples} "
                     f"examples, train loss {loss}, {result.seconds:.0f} s{' (resumed)' if result.resumed else ''}"),
              highlight=False)
    out.print(escape(f"evaluate it: insta eval --model {result.model_dir} --target SPEC"), highlight=False)


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option("--model", help="A trained model folder (or any HF seq2seq/causal LM, GGUF file, or smollm2).")],
    target: Annotated[str, typer.Option("--target", "-t", help="Pool spec holding the target tasks (NIV2 checkout, p3:..., table). " + SPEC_HELP)],
    task: Annotated[Optional[list[str]], typer.Option("--task", help="Only these task ids of the target spec (repeatable).")] = None,
    metric: Annotated[str, typer.Option("--metric", help="auto (rank where answer choices exist, else rouge + em) | rank (accuracy and the gold answer's log-likelihood) | rouge | em | loglik.")] = "auto",
    max_examples: Annotated[int, typer.Option("--max-examples", help="Examples per target task (seeded sample).")] = 100,
    format: Annotated[str, typer.Option("--format", help="NIV2 encoding: def | def+pos (as the model was trained).")] = "def",
    rows: Annotated[Optional[str], typer.Option("--rows", help="P3 rows from local JSONL files DIR/<entry>.jsonl.")] = None,
    split: Annotated[str, typer.Option("--split", help="Split of P3 source datasets to evaluate on.")] = "validation",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Generation length for rouge/em.")] = 64,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling examples.")] = 0,
    exclude_seen: Annotated[Optional[list[str]], typer.Option("--exclude-seen", help="A selection file (insta select --out) whose target examples (seen by less/rds/samples) are left out of the evaluation; repeatable.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document (with per-example predictions).")] = False,
    out_file: Annotated[Optional[str], typer.Option("--out", "-o", help="Also write the JSON document to this file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Zero-shot evaluation on target tasks: rank classification accuracy, ROUGE-L, exact match."""
    from .io import check_out, write_json_atomic
    from .pipeline import evaluate_model, seen_examples, target_tasks

    if out_file:
        check_out(out_file)
        _not_an_input(out_file, [target, *(exclude_seen or []), rows, model])
    held = seen_examples(exclude_seen or [])
    tasks = target_tasks(target, task)
    with _progress(quiet) as progress:
        bar = progress.add_task(f"evaluating on {len(tasks)} task(s)", total=None)
        result = evaluate_model(model, tasks, metric=metric, max_examples=max_examples, format=format, rows=rows,
                                split=split, seed=seed, device=device, max_new_tokens=max_new_tokens, held=held,
                                progress=lambda done, total: progress.update(bar, completed=done, total=total))
    doc = result.to_dict(with_examples=True)
    if out_file:
        write_json_atomic(out_file, doc)
    if json_out:
        _print_json(doc)
        return
    names = list(result.average)
    table = Table(title=escape(f"{model} on {target}"), title_justify="left")
    table.add_column("task")
    table.add_column("n", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    for t in result.tasks:
        table.add_row(escape(t.task), str(t.n), *(f"{t.metrics[n]:.3f}" if n in t.metrics else "" for n in names))
    table.add_row("average", str(sum(t.n for t in result.tasks)), *(f"{v:.3f}" for v in result.average.values()))
    out.print(table)


@app.command("run")
def run_cmd(
    config: Annotated[str, typer.Argument(help="YAML run config (see README: out, pool, targets, methods, k, mix, train, eval).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """select → mix → train → eval for every target and method of a config; resumable."""
    from .pipeline import load_run_config, results_markdown, run

    if not config.strip():
        raise InstaError("the config path is empty; give a YAML run config (see README)")
    cfg = load_run_config(config)
    say = _say(quiet)
    summary = run(cfg, quiet=quiet or json_out, say=say)  # the Trainer's bars and logs: not with --json either
    if json_out:
        _print_json(summary)
        return
    print(printable(results_markdown(summary["results"])), end="")
    if not quiet:
        err.print(f"[dim]{escape(f'written: {cfg.out}/results.json, results.md')}[/]", highlight=False)


@app.command()
def pools(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the pool readers, their options and the named pools."""
    from .pools import readers

    regs = readers()
    if json_out:
        _print_json({k: {"summary": r.summary, "arg": r.arg, "options": r.options, "named": r.named,
                              "examples": r.examples} for k, r in regs.items()})
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
def report(
    sources: Annotated[list[str], typer.Argument(help="A selection file (insta select --out: .json or .jsonl), a benchmark result (insta bench --out) or an insta run folder; several selection files are shown side by side, with their overlap per target.")],
    out_file: Annotated[str, typer.Option("--out", "-o", help="The HTML file to write (one self-contained page: no network needed to open it).")],
    title: Annotated[Optional[str], typer.Option("--title", help="The page title (default: from the input's name).")] = None,
    map_: Annotated[bool, typer.Option("--map", help="A selection: add a 2-D map of the pool's tasks (PCA of their instruction vectors; loads the pool and embedder the file records).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Say nothing on success.")] = False,
) -> None:
    """Write a selection, a benchmark or a run as one web page: ranked tasks with score bars and the
    gap to the first task not selected, the best-matching pair with shared words marked, metric
    tables with CIs, run results and method overlap."""
    from .io import check_out
    from .report import combine, load_report, map_for, write_report

    check_out(out_file, "--out")  # (a folder, a run folder included, is refused here)
    _not_an_input(out_file, [s for s in sources if not Path(s).is_dir()])  # a page inside a run folder is fine
    loaded = load_report(sources[0]) if len(sources) == 1 else combine([load_report(s) for s in sources])
    path = write_report(loaded, out_file, title=title, pool_map_svg=map_for(loaded) if map_ else "")
    _say(quiet)(f"wrote {path} ({loaded.kind} report, {path.stat().st_size / 1024:.0f} KiB)")


@app.command()
def tasks(
    pool: Annotated[list[str], typer.Option("--pool", "-p", help="Repeat for a union of pools (each task names its pool). " + SPEC_HELP)],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (with instructions).")] = False,
) -> None:
    """List the tasks of a pool (id, label, dataset, number of instructions)."""
    from .pools import load_pool, pool_field

    loaded = load_pool(pool)
    if json_out:
        _print_json({"pool": pool_field(pool), "description": loaded.description, "tasks": [t.to_dict() for t in loaded]})
        return
    table = Table(title=escape(f"{loaded.name}: {len(loaded)} tasks, {loaded.n_instructions} instructions"),
                  title_justify="left", caption=escape(loaded.description), caption_justify="left")
    union = len(pool) > 1
    for col in ("task", *(["pool"] if union else []), "label", "dataset", "instructions", "first instruction"):
        table.add_column(col)
    for t in loaded:
        cells = (t.id, *([_short(t.origin or "", 40)] if union else []), t.label or "", t.dataset or "",
                 str(len(t.instructions)), _short(t.texts[0], 70))
        table.add_row(*(escape(x) for x in cells))
    out.print(table)


@app.command()
def cache(
    clear: Annotated[bool, typer.Option("--clear", help="Delete every cached embedding and feature, stored pool vector, parsed template, LoRA warm-up, sampled example and ONNX export.")] = False,
) -> None:
    """Show (or clear) the embedding cache, the stored pool vectors, the parsed templates and the
    other derived files (LoRA warm-ups, sampled examples, ONNX exports of the embedders)."""
    import shutil

    from .cache import VectorStore, delete_cache, inspect_cache
    from .paths import cache_dir

    path = cache_dir() / "embeddings.sqlite"
    store = VectorStore(cache_dir() / "vectors")
    if clear and not path.exists():
        print(f"{path}: no cache to remove")
    elif clear:
        removed = delete_cache(path)
        print(f"removed {path}" + (f" ({removed} embeddings)" if removed is not None else " (it was damaged)"))
    elif not path.exists():
        print(f"{path}: no cache yet")
    else:  # a damaged or read-only cache is reported, not a failure of this command
        count, problem = inspect_cache(path)
        print(f"{path}: " + "; ".join(x for x in (None if count is None else f"{count} embeddings", problem) if x))
    arrays = [f for f in sorted(store.root.glob("*.npy")) if f.is_file()]
    parsed = cache_dir() / "promptsource-parsed"
    derived = {"the parsed promptsource templates": parsed, "the LoRA warm-ups of less": cache_dir() / "lm-warmup",
               "the sampled examples of less/rds/samples": cache_dir() / "example-samples",
               "the ONNX exports of the embedders": cache_dir() / "onnx"}
    if clear:
        if store.root.is_dir():
            print(f"removed {store.clear()} pool vector file(s) from {store.root}")
        for what, folder in derived.items():
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                print(f"removed {what} ({folder})")
    else:
        if arrays:
            size = sum(f.stat().st_size for f in arrays)
            print(f"{store.root}: {len(arrays)} pool vector file(s), {size / 2**20:.1f} MiB")
        for what, folder in derived.items():
            if folder.is_dir():
                print(f"{folder}: {what} ({sum(1 for _ in folder.iterdir())} entries, {_folder_size(folder) / 2**20:.1f} MiB)")


def _folder_size(folder: Path) -> int:
    """Bytes of the files under a folder (links not followed; a file removed meanwhile counts 0)."""
    total = 0
    for f in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_size
    return total


def _terminated(signum, frame) -> None:
    raise Terminated()


def _value_options(runner: typer.Typer) -> tuple[set[str], dict[str, str]]:
    """Of the one command being run: the option names that take a value, and, for those that
    take a single value (not a list, which repeats on purpose), each name's first spelling
    (``-k`` and ``--top-k`` are one option)."""
    import typing

    takes_value: set[str] = set()
    single: dict[str, str] = {}
    callback = runner.registered_commands[0].callback
    for name, hint in typing.get_type_hints(callback, include_extras=True).items():
        info = next((m for m in getattr(hint, "__metadata__", ()) if hasattr(m, "param_decls")), None)
        base = typing.get_args(hint)[0] if info is not None else hint
        if type(info).__name__ != "OptionInfo" or bool in (base, *typing.get_args(base)):
            continue  # an argument, a flag
        decls = [info.default] if isinstance(info.default, str) and info.default.startswith("-") else []
        names = decls + list(info.param_decls or ()) or [f"--{name.replace('_', '-')}"]
        takes_value.update(names)
        if list not in (typing.get_origin(base), *map(typing.get_origin, typing.get_args(base))):
            single.update({n: names[0] for n in names})
    return takes_value, single


def _refuse_empty_or_repeated(runner: typer.Typer) -> None:
    """``--model ""`` or ``--targets=``: an option given an empty value is an error, not the
    option left out (which silently meant the default model, no targets file, ...). An option
    that takes one value given twice (``-k 3 -k 5``, ``--targets A --targets B``) is an error,
    not the last one silently kept."""
    args = sys.argv[2:]
    options = [a.partition("=")[0] for a in args if a.startswith("-")]
    empty = "" in args or any(a.startswith("-") and a.endswith("=") for a in args)
    mixed = len({o.startswith("--") for o in options}) > 1  # -k and --top-k might both be there
    if (not empty and len(options) == len(set(options)) and not mixed) or len(runner.registered_commands) != 1:
        return  # the usual case costs nothing
    takes_value, single = _value_options(runner)
    seen: dict[str, str] = {}
    for i, arg in enumerate(args):
        option, eq, value = arg.partition("=")
        value = value if eq else (args[i + 1] if i + 1 < len(args) and arg in takes_value else None)
        if value == "" and option in takes_value - {"-i", "--instruction"}:  # -i "": its own message
            raise InstaError(f"{option} is empty; give it a value, or leave the option out")
        if option in single and value is not None:
            if single[option] in seen:
                raise InstaError(f"{option} is given twice ({seen[single[option]]!r}, {value!r}); it takes one value: "
                                 "give it once")
            seen[single[option]] = value


def _one_command(name: str) -> typer.Typer:
    """The app with only the command being run: typer builds every registered command's
    parameters (signatures, types) before dispatching, which costs each invocation tens of
    milliseconds for commands it will not run. Anything else (help, an unknown or misspelt
    command) gets the whole app."""
    chosen = [c for c in app.registered_commands if (c.name or c.callback.__name__.replace("_", "-")) == name]
    if len(chosen) != 1:
        return app
    one = copy.copy(app)  # the same settings and callback, one command
    one.registered_commands = chosen
    return one


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit code 2; the
    output is written whole, or cut by its reader (exit 0), or the command says it is not."""
    try:
        try:
            _main()
        except SystemExit as exc:
            # a success whose output was cut short, the failure caught on the way by a handler
            # meant for something else: the failure it is
            failure = sys.stdout.failure if isinstance(sys.stdout, _Stdout) else None
            if exc.code in (0, None) and isinstance(failure, _StdoutFailed):
                raise failure from None
            raise
        finally:
            if isinstance(sys.stdout, _Stdout):
                sys.stdout.flush()
    except _StdoutClosed:  # the reader went away (| head): what it wanted, it got
        sys.exit(0)
    except _StdoutFailed as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(exc.exit_code)


def _main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    # rich shows our progress; keep HF datasets' own bars off the terminal (an environment
    # variable, so that commands which never touch datasets do not pay for importing it)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "datasets" in sys.modules:  # imported already (the CLI called from Python): the variable came late
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    if {"-q", "--quiet", "--json"} & set(sys.argv[1:]):  # also the hub's and transformers' bars (loading, saving weights)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # any other library's tqdm bar (GGUF conversion, sentence-transformers)
        import warnings

        warnings.filterwarnings("ignore", message=".*pin_memory.*")  # torch's DataLoader on a CPU-only machine
        if "huggingface_hub" in sys.modules:  # imported already (insta's CLI called from Python): the variable came late
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    for stream in (sys.stdout, sys.stderr):  # text that is not UTF-8 is shown escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    insta_log = logging.getLogger("insta")
    if not any(isinstance(h, _WarningLines) for h in insta_log.handlers):
        insta_log.addHandler(_WarningLines())
    global _json_stream
    signal.signal(signal.SIGTERM, _terminated)  # timeout, SLURM, docker stop: clean up as on Ctrl-C
    if sys.stdout is None:  # started with its standard output closed (>&-): what it prints would vanish
        err.print("error: the standard output is closed; give the command somewhere to write (> FILE, or "
                  "> /dev/null to discard it)", highlight=False, markup=False)
        sys.exit(2)
    _guard_stdout()
    runner = _one_command(sys.argv[1] if len(sys.argv) > 1 else "")
    try:
        _refuse_empty_or_repeated(runner)
        if "--json" in sys.argv[1:]:  # stdout carries the JSON document and nothing else
            _json_stream = sys.stdout
            with contextlib.redirect_stdout(sys.stderr):
                code = runner(standalone_mode=False, prog_name="insta")
        else:
            _json_stream = None
            code = runner(standalone_mode=False, prog_name="insta")
        if code == 130:  # click turns Ctrl-C (KeyboardInterrupt) into Exit(130), returned here
            raise KeyboardInterrupt
        sys.exit(code if isinstance(code, int) else 0)
    except _CLICK.UsageError as exc:  # an unknown command or option, a value of the wrong type
        if type(exc).__name__ == "NoArgsIsHelpError":  # 'insta' alone: the help
            print(exc.ctx.get_help() if exc.ctx else "")
            sys.exit(2)
        command = exc.ctx.command_path if exc.ctx else "insta"
        err.print(printable(f"error: {exc.format_message()} (see '{command} --help')"), highlight=False, markup=False)
        sys.exit(2)
    except typer.Abort:
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except InstaError as exc:
        err.print(printable(f"error: {exc}"), highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except Terminated:
        err.print("terminated", highlight=False)
        sys.exit(143)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        err.print(f"error: {exc.strerror}{where}; free some space (or point --out / INSTA_CACHE_DIR elsewhere) and "
                  "run the command again: finished steps are kept", highlight=False, markup=False)
        sys.exit(2)
