"""The ``revopt`` command line: ``revopt analyze ORDERS --out DIR`` and ``revopt demo``.

Every text shown to the operator comes from the message catalog, in the language of ``--lang``
or the locale. Input and option errors print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import warnings

import duckdb
from pathlib import Path

from revopt import __version__
from revopt.errors import ConfigError, RevoptError, RevoptWarning
from revopt.i18n import LANGUAGES, Translator, catalog, detect_language, message
from revopt.ingest import DUPLICATE_MODES, FIELDS
from revopt.recommend import BASKET_KEYS, METHODS as RECOMMEND_METHODS
from revopt.selection import MODEL_CHOICES
from revopt.timeunits import TIME_UNITS

__all__ = ["main", "build_parser"]

log = logging.getLogger("revopt")

EXIT_OK = 0
EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's status for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
# The demo shop's orders carry China local times, and its last half year is held out to show the
# predicted-versus-actual diagnostics.
DEMO_TIME_ZONE = "Asia/Shanghai"
DEMO_HOLDOUT_DAYS = 183


def _date_parser(language: str):
    def parse(text: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(message("cli.bad_date", language, value=repr(text))) from error

    return parse


def _positive_int(language: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(message("cli.bad_positive_int", language, value=repr(text)))
        return value

    return parse


def _argparse_translation(language: str):
    """Return a replacement for argparse's gettext that maps its English texts to ``language``."""
    entries = [entry for message_id, entry in catalog().items() if message_id.startswith("cli.argparse.")]
    table = {entry["en"]: entry[language] for entry in entries}
    return lambda text: table.get(text, text)


def _add_ingest_options(parser: argparse.ArgumentParser, t, *, workspace_help: str = "cli.help.workspace") -> None:
    parser.add_argument("--tz", help=t("cli.help.tz"))
    parser.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD",
                        help=t("cli.help.map", fields=", ".join(FIELDS)))
    parser.add_argument("--dayfirst", action="store_true", default=None, help=t("cli.help.dayfirst"))
    parser.add_argument("--date-format", help=t("cli.help.date_format"))
    parser.add_argument("--duplicates", choices=DUPLICATE_MODES, default="auto", help=t("cli.help.duplicates"))
    parser.add_argument("--max-invalid", type=float, default=0.01, help=t("cli.help.max_invalid"))
    parser.add_argument("--workspace", type=Path, help=t(workspace_help))
    parser.add_argument("--memory-limit", default="4GB", help=t("cli.help.memory_limit"))


def _add_analysis_options(parser: argparse.ArgumentParser, t) -> None:
    parser.add_argument("--calibration-end", type=_date_parser(t.language), help=t("cli.help.calibration_end"))
    parser.add_argument("--time-unit", choices=TIME_UNITS, default="week", help=t("cli.help.time_unit"))
    parser.add_argument("--horizon", default="12M", help=t("cli.help.horizon"))
    parser.add_argument("--discount-rate", type=float, default=0.10, help=t("cli.help.discount_rate"))
    parser.add_argument("--margin", type=float, default=1.0, help=t("cli.help.margin"))
    parser.add_argument("--currency", default="CNY", help=t("cli.help.currency"))
    _add_ingest_options(parser, t)
    parser.add_argument("--backend", help=t("cli.help.backend"))
    parser.add_argument("--model", choices=MODEL_CHOICES, default="auto", help=t("cli.help.model"))
    parser.add_argument("--churn-days", type=_positive_int(t.language), default=90, help=t("cli.help.churn_days"))
    parser.add_argument("--top-k", type=_positive_int(t.language), default=10, help=t("cli.help.top_k"))
    parser.add_argument("--actions", type=Path, help=t("cli.help.actions"))
    parser.add_argument("--shop-name", help=t("cli.help.shop_name"))
    parser.add_argument("--no-growth", dest="growth", action="store_false", help=t("cli.help.no_growth"))


def _add_common_options(parser: argparse.ArgumentParser, t) -> None:
    # SUPPRESS keeps a --lang given before the command from being reset by this parser's default.
    parser.add_argument("--lang", choices=LANGUAGES, default=argparse.SUPPRESS, help=t("cli.help.lang"))
    parser.add_argument("-q", "--quiet", action="store_true", help=t("cli.help.quiet"))
    parser.add_argument("-v", "--verbose", action="store_true", help=t("cli.help.verbose"))


def build_parser(language: str) -> argparse.ArgumentParser:
    """Build the argument parser with help texts in ``language``."""

    t = Translator(language)

    class Parser(argparse.ArgumentParser):
        """An argument parser whose errors are one line in the operator's language, with exit status 2."""

        def error(self, text: str):
            detail = message("cli.see_help", language, detail=text, prog=self.prog)
            self.exit(EXIT_INPUT_ERROR, message("cli.error", language, detail=detail) + "\n")

    parser = Parser(prog="revopt", description=t("cli.description"))
    parser.add_argument("--lang", choices=LANGUAGES, default=None, help=t("cli.help.lang"))
    parser.add_argument("--version", action="version", version=f"revopt {__version__}", help=t("cli.help.version"))
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", help=t("cli.help.analyze"), description=t("cli.help.analyze"))
    analyze.add_argument("orders", nargs="?", help=t("cli.help.orders_optional"))
    analyze.add_argument("--out", type=Path, required=True, help=t("cli.help.out"))
    _add_analysis_options(analyze, t)
    _add_common_options(analyze, t)

    demo = commands.add_parser("demo", help=t("cli.help.demo"), description=t("cli.help.demo"))
    demo.add_argument("--out", type=Path, default=Path("revopt-demo"), help=t("cli.help.demo_out"))
    demo.add_argument("--customers", type=int, default=5000, help=t("cli.help.customers"))
    demo.add_argument("--seed", type=int, default=2025, help=t("cli.help.seed"))
    _add_analysis_options(demo, t)
    _add_common_options(demo, t)

    generate = commands.add_parser("generate", help=t("cli.help.generate"), description=t("cli.help.generate"))
    generate.add_argument("--out", type=Path, required=True, help=t("cli.help.generate_out"))
    generate.add_argument("--customers", type=_positive_int(language), default=1_000_000, help=t("cli.help.customers"))
    generate.add_argument("--chunk", type=_positive_int(language), default=100_000, help=t("cli.help.chunk"))
    generate.add_argument("--seed", type=int, default=2025, help=t("cli.help.seed"))
    _add_common_options(generate, t)

    ingest = commands.add_parser("ingest", help=t("cli.help.ingest"), description=t("cli.help.ingest"))
    ingest.add_argument("orders", help=t("cli.help.orders"))
    _add_ingest_options(ingest, t, workspace_help="cli.help.workspace_ingest")
    _add_common_options(ingest, t)

    recommend = commands.add_parser("recommend", help=t("cli.help.recommend"), description=t("cli.help.recommend"))
    recommend.add_argument("orders", help=t("cli.help.orders"))
    recommend.add_argument("--out", type=Path, required=True, help=t("cli.help.recommend_out"))
    recommend.add_argument("-k", type=_positive_int(language), default=10, help=t("cli.help.top_k"))
    recommend.add_argument("--method", choices=("auto", *RECOMMEND_METHODS), default="auto",
                           help=t("cli.help.recommend_method"))
    recommend.add_argument("--basket", choices=BASKET_KEYS, default="order", help=t("cli.help.basket"))
    recommend.add_argument("--customer", action="append", default=[], help=t("cli.help.customer"))
    _add_ingest_options(recommend, t)
    _add_common_options(recommend, t)

    export = commands.add_parser("export", help=t("cli.help.export"), description=t("cli.help.export"))
    export.add_argument("run", type=Path, help=t("cli.help.run_dir"))
    export.add_argument("--out", type=Path, help=t("cli.help.export_out"))
    _add_common_options(export, t)

    preview = commands.add_parser("preview", help=t("cli.help.preview"), description=t("cli.help.preview"))
    preview.add_argument("run", type=Path, help=t("cli.help.run_dir"))
    preview.add_argument("--action", help=t("cli.help.action"))
    preview.add_argument("-n", type=_positive_int(language), default=3, help=t("cli.help.preview_n"))
    _add_common_options(preview, t)
    return parser


def _language_from_argv(argv: list[str]) -> str:
    for index, argument in enumerate(argv):
        if argument == "--lang" and index + 1 < len(argv) and argv[index + 1] in LANGUAGES:
            return argv[index + 1]
        if argument.startswith("--lang=") and argument.split("=", 1)[1] in LANGUAGES:
            return argument.split("=", 1)[1]
    return detect_language(None)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _settings(args):
    from revopt.pipeline import AnalysisSettings

    return AnalysisSettings(
        calibration_end=args.calibration_end, time_unit=args.time_unit, horizon=args.horizon,
        discount_rate=args.discount_rate, margin=args.margin, tz=args.tz, currency=args.currency,
        language=args.lang, column_map=tuple(args.map), dayfirst=args.dayfirst, date_format=args.date_format,
        duplicates=args.duplicates, max_invalid_share=args.max_invalid, workspace=args.workspace,
        backend=args.backend, memory_limit=args.memory_limit, model=args.model, churn_days=args.churn_days,
        top_k=args.top_k, actions_config=args.actions, shop_name=args.shop_name, growth=args.growth,
    )


def _run_analysis(orders, out_dir: Path, args, language: str):
    from revopt.pipeline import analyze

    def progress(step: str) -> None:
        if not args.quiet:
            print(f"[revopt] {message(f'cli.step.{step}', language)} ...", file=sys.stderr, flush=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = analyze(orders, out_dir, _settings(args), progress=progress)
        finally:
            _show_warnings(caught, language)
    ingest = result.ingest
    print(message("cli.analyze.rows", language, **{key: ingest[key] for key in (
        "rows_read", "rows_kept", "rows_rejected", "return_rows", "purchases_merged", "rows_without_customer_id")}))
    for reason, count in sorted(ingest["rejected_by_reason"].items()):
        print(message("cli.analyze.rejected_reason", language,
                      reason=message(f"ingest.reason.{reason}", language), count=count))
    excluded = result.model["spend_excluded"]
    if excluded["count"]:
        print(message("cli.analyze.spend_excluded", language, count=excluded["count"],
                      examples=", ".join(excluded["example_ids"])))
    if not result.model["intervals"]["available"]:
        print(message("cli.analyze.no_intervals", language, model=result.selection.chosen))
    holdout = result.model.get("holdout")
    if args.calibration_end is not None and not holdout:
        print(message("cli.analyze.no_holdout", language, calibration_end=args.calibration_end))
    if holdout:
        print(message("cli.analyze.holdout", language, predicted=holdout["predicted_total"],
                      actual=holdout["actual_total"], mae=holdout["mae"]))
    print(message("cli.analyze.model", language, reason=result.selection.reason(language)))
    _print_growth(result.model, language)
    print(message("cli.analyze.done", language, customers=len(result.customers), horizon=args.horizon,
                  clv_total=float(result.customers.clv.sum()), currency=args.currency, out_dir=out_dir))
    print(message("cli.analyze.report", language, path=out_dir / "report.html"))
    return result


def _print_growth(model: dict, language: str) -> None:
    """One line each for the churn model against its baseline, the recommendation method and the actions."""
    churn = model.get("churn")
    if churn:
        scores = churn["scores"]
        baseline = max(scores["bgnbd_no_purchase"]["roc_auc"], scores["bgnbd_p_alive"]["roc_auc"])
        verdict = message("cli.analyze.beats" if churn["beats_baseline"] else "cli.analyze.not_beats", language)
        print(message("cli.analyze.churn", language, auc=scores["model"]["roc_auc"], baseline=baseline,
                      verdict=verdict))
    recommendations = model.get("recommendations")
    if recommendations:
        evaluation = {row["method"]: row for row in recommendations.get("evaluation") or []}
        chosen = evaluation.get(recommendations["method"], {})
        popularity = evaluation.get("popularity", {})
        print(message("cli.analyze.recommend", language, method=recommendations["method"],
                      recall=chosen.get("recall@10", float("nan")),
                      popularity=popularity.get("recall@10", float("nan"))))
    actions = model.get("actions")
    if actions:
        labels = [(message(f"actions.label.{row['next_best_action']}", language), row["customers"])
                  for row in actions["by_action"]]
        separator = "、" if language == "zh-CN" else ", "
        counts = separator.join(f"{label} {count:,}" for label, count in labels)
        print(message("cli.analyze.actions", language, counts=counts))


def _show_warnings(caught, language: str) -> None:
    """Print revopt's warnings in the operator's language; log other libraries' warnings once each (-v shows them)."""
    repeats: dict[tuple[str, str], int] = {}
    for warning in caught:
        if isinstance(warning.message, RevoptWarning):
            print(message("cli.warning", language, detail=warning.message.localized(language)), file=sys.stderr)
        else:
            key = (warning.category.__name__, str(warning.message))
            repeats[key] = repeats.get(key, 0) + 1
    for (category, text), count in repeats.items():
        log.info("event=library_warning category=%s count=%d message=%s", category, count, text)


def _run_demo(args, language: str) -> None:
    from revopt.demo import DemoParameters, generate_shop, write_export

    if not args.quiet:
        print(f"[revopt] {message('cli.step.generate', language)} ...", file=sys.stderr, flush=True)
    shop = generate_shop(DemoParameters(n_customers=args.customers, seed=args.seed))
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_export(shop, args.out / "demo_orders.csv")
    params = shop.parameters
    print(message("cli.demo.written", language, customers=params.n_customers, rows=len(shop.orders), path=path))
    print(message("cli.demo.truth", language, r=params.r, alpha=params.alpha, a=params.a, b=params.b,
                  p=params.p, q=params.q, gamma=params.gamma))
    if args.tz is None:
        args.tz = DEMO_TIME_ZONE
    if args.calibration_end is None:
        args.calibration_end = params.end - dt.timedelta(days=DEMO_HOLDOUT_DAYS)
    result = _run_analysis(path, args.out, args, language)
    fitted = {**result.model["models"]["bg_nbd"]["params"], **result.model["models"]["gamma_gamma"]["params"]}
    print(message("cli.demo.fitted", language, **{name: f"{value:.3g}" for name, value in fitted.items()}))
    print(message("cli.demo.chosen", language, model=result.selection.chosen,
                  reason=result.selection.reason(language)))


def _run_generate(args, language: str) -> None:
    from revopt.scalegen import write_scale_log

    if not args.quiet:
        print(f"[revopt] {message('cli.step.generate', language)} ...", file=sys.stderr, flush=True)
    written = write_scale_log(args.out, n_customers=args.customers, chunk_customers=args.chunk, seed=args.seed)
    print(message("cli.generate.written", language, customers=written.n_customers, rows=written.rows,
                  parts=len(written.chunks), path=written.orders_dir, truth=written.truth_path))


def _run_ingest(args, language: str) -> None:
    from revopt.store import add_orders

    if args.workspace is None:
        raise ConfigError(message_id="errors.ingest_needs_workspace")
    if not args.quiet:
        print(f"[revopt] {message('cli.step.ingest', language)} ...", file=sys.stderr, flush=True)
    report = add_orders(
        args.orders, args.workspace, memory_limit=args.memory_limit, column_map=list(args.map),
        dayfirst=args.dayfirst, date_format=args.date_format, tz=args.tz, duplicates=args.duplicates,
        max_invalid_share=args.max_invalid,
    )
    print(message("cli.ingest.added", language, lines=report.lines_added, orders=report.orders_added,
                  rejected=report.rows_rejected, workspace=args.workspace))
    if report.lines_skipped:
        print(message("cli.ingest.skipped", language, lines=report.lines_skipped, orders=report.orders_skipped))
    print(message("cli.ingest.stored", language, lines=report.stored_lines, orders=report.stored_orders))


def _run_recommend(args, language: str) -> None:
    from revopt.pipeline import AnalysisSettings, recommend_orders

    def progress(step: str) -> None:
        if not args.quiet:
            print(f"[revopt] {message(f'cli.step.{step}', language)} ...", file=sys.stderr, flush=True)

    settings = AnalysisSettings(
        tz=args.tz, language=args.lang, column_map=tuple(args.map), dayfirst=args.dayfirst,
        date_format=args.date_format, duplicates=args.duplicates, max_invalid_share=args.max_invalid,
        workspace=args.workspace, memory_limit=args.memory_limit,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = recommend_orders(args.orders, args.out, settings, k=args.k, method=args.method,
                                      basket=args.basket, customers=tuple(args.customer), progress=progress)
        finally:
            _show_warnings(caught, language)
    if result.evaluation is not None and not result.evaluation.empty:
        print(message("cli.recommend.evaluation", language, split_date=result.split_date))
        print(_metrics_table(result.evaluation, result.method))
    print(message("cli.recommend.done", language, customers=result.stats["customers_recommended"], k=args.k,
                  method=result.method, out_dir=args.out))
    suffix = "zh" if language == "zh-CN" else "en"
    for customer in result.stats["customers_without_recommendations"]:
        print(message("cli.recommend.none_for", language, customer_id=customer))
    for customer in args.customer:
        for row in result.items[result.items.customer_id == customer].itertuples():
            print(message("cli.recommend.item", language, customer_id=customer, rank=row.rank,
                          product=row.product_name or row.product_id, reason=getattr(row, f"reason_{suffix}")))


# Columns of the method comparison printed by `revopt recommend`.
_PRINTED_METRICS = ("precision@5", "recall@5", "precision@10", "recall@10", "map@10", "ndcg@10", "coverage")


def _metrics_table(evaluation, chosen: str) -> str:
    columns = [column for column in _PRINTED_METRICS if column in evaluation.columns]
    lines = ["  " + "method".ljust(16) + "".join(column.rjust(13) for column in columns)]
    for row in evaluation.reset_index().to_dict("records"):
        name = row["method"] + (" *" if row["method"] == chosen else "")
        lines.append("  " + name.ljust(16) + "".join(f"{row[column]:13.4f}" for column in columns))
    return "\n".join(lines)


def _run_export(args, language: str) -> None:
    from revopt.audience import export_audiences, run_language

    if args.lang is None:
        language = run_language(args.run) or language
    out_dir = args.out or args.run / "audiences"
    written = export_audiences(args.run, out_dir, language)
    for action, path in written.items():
        print(message("cli.export.written", language, action=message(f"actions.label.{action}", language),
                      rows=sum(1 for _ in path.open(encoding="utf-8-sig")) - 1, path=path))
    if not written:
        print(message("cli.export.none", language))


def _run_preview(args, language: str) -> None:
    from revopt.audience import run_language, sample_messages

    if args.lang is None:
        language = run_language(args.run) or language
    for sample in sample_messages(args.run, language, action=args.action, n=args.n):
        print(message("cli.preview.line", language, **sample))


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs."""


def _interrupt(signal_number, frame) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    language = _language_from_argv(argv)
    original_gettext = argparse._
    argparse._ = _argparse_translation(language)
    try:
        args = build_parser(language).parse_args(argv)
    finally:
        argparse._ = original_gettext
    language = detect_language(args.lang)
    _configure_logging(args.verbose)
    # A terminated run unwinds like Ctrl-C, so analyze removes its half-written scratch folder.
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command == "analyze":
            _run_analysis(args.orders, args.out, args, language)
        elif args.command == "demo":
            _run_demo(args, language)
        elif args.command == "generate":
            _run_generate(args, language)
        elif args.command == "ingest":
            _run_ingest(args, language)
        elif args.command == "export":
            _run_export(args, language)
        elif args.command == "preview":
            _run_preview(args, language)
        else:
            _run_recommend(args, language)
    except RevoptError as error:
        log.info("event=run_failed error=%s", error)
        print(message("cli.error", language, detail=error.localized(language)), file=sys.stderr)
        return EXIT_INPUT_ERROR
    except duckdb.OutOfMemoryException as error:
        # analyze converts this itself; ingest and recommend reach here.
        failure = ConfigError(message_id="errors.engine_out_of_memory", limit=getattr(args, "memory_limit", "4GB"),
                              source=getattr(args, "orders", None) or getattr(args, "workspace", None),
                              detail=str(error).strip().splitlines()[0])
        log.info("event=run_failed error=%s", failure)
        print(message("cli.error", language, detail=failure.localized(language)), file=sys.stderr)
        return EXIT_INPUT_ERROR
    except (KeyboardInterrupt, duckdb.InterruptException) as interruption:
        print(message("cli.interrupted", language), file=sys.stderr)
        return EXIT_TERMINATED if isinstance(interruption, _Terminated) else EXIT_INTERRUPTED
    except RuntimeError as error:
        # DuckDB turns a signal that arrives during a query into RuntimeError("Query interrupted").
        if "interrupted" not in str(error).lower():
            raise
        print(message("cli.interrupted", language), file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
