"""``tierwatch`` command line: a thin layer over the pipeline's entry points.

Every :class:`~pipeline.settings.Settings` field is also a flag (``--web-port 6067``),
so a flag, a ``TIERWATCH_*`` variable and the default are read in that order.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (also TIERWATCH_* environment variables)")
    for name, info in Settings.model_fields.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"setting_{name}",
                           default=None, metavar=name.upper(), help=info.description)


def _settings(ns: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {k.removeprefix("setting_"): v for k, v in vars(ns).items()
                                 if k.startswith("setting_") and v is not None}
    return Settings(**overrides)


def cmd_schemas_export(ns: argparse.Namespace, _: Settings) -> int:
    from pipeline.schemas import export_schemas

    for path in export_schemas(Path(ns.dir)):
        print(path)
    return 0


def cmd_topics_create(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.topics import create_topics

    for topic, state in create_topics(settings).items():
        print(f"{topic}\t{state}")
    return 0


def cmd_worker(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.stream.app import run_worker

    sys.argv = [sys.argv[0], "worker"]  # faust parses argv itself
    run_worker(settings)
    return 0


def cmd_simulate(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.demo import simulate

    if ns.kafka:
        from pipeline.live import stream_simulation

        return stream_simulation(settings, ns.scenario, days=ns.days, rate=ns.rate,
                                 seed=ns.seed, speedup=ns.speedup)
    routing, feedback, _, _ = simulate(ns.scenario, Path(ns.out), days=ns.days,
                                           rate=ns.rate, seed=ns.seed, gzip=ns.gzip)
    print(f"wrote {routing}, {feedback}, baseline.json, truth.json in {ns.out}")
    return 0


def cmd_replay(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.replay import Replay, build_monitor, read_alerts
    from pipeline.report.build import report_data
    from pipeline.report.render import write_report
    from pipeline.schemas import Baseline

    baselines = [Baseline.model_validate_json(line) for path in ns.baseline
                 for line in Path(path).read_bytes().splitlines() if line.strip()]
    monitor = build_monitor(settings, record=True)
    out = Path(ns.out)
    result = Replay(settings, monitor, out).run(
        Path(ns.routing), Path(ns.feedback) if ns.feedback else None, baselines)
    alerts = read_alerts(out / "alerts.jsonl")
    summary: dict[str, Any] = {"events": result.events, "seconds": round(result.seconds, 3),
                               "outputs": result.outputs, "counts": result.counts,
                               "routers": {}}
    for router_id in sorted(monitor.routers):
        data = report_data(monitor, router_id, alerts, onset_ts=None,
                           generated_from=str(ns.routing))
        name = "report.html" if len(monitor.routers) == 1 else f"report-{router_id}.html"
        write_report(data, out / name)
        summary["routers"][router_id] = data.to_dict()
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    print(f"{result.events} events in {result.seconds:.1f}s ({result.rate:,.0f}/s); "
          f"outputs {result.outputs}; see {out}")
    return 0


def cmd_demo(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.demo import run_demo

    if ns.kafka:
        from pipeline.live import kafka_demo

        return kafka_demo(settings, Path(ns.out), days=ns.days, rate=ns.rate, seed=ns.seed)
    result = run_demo(settings, Path(ns.out), days=ns.days, rate=ns.rate, seed=ns.seed)
    print("\ntierwatch saw                                                         "
          "| what the aggregate dashboard showed")
    for line in result.timeline:
        print("  " + line)
    print(f"\nreport: {result.report}  ({result.summary['events']:,} events replayed in "
          f"{result.summary['seconds']:.0f}s)")
    return 0


def cmd_baseline_fit(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.baselines import fit_file

    baseline = fit_file(Path(ns.scores), router_id=ns.router_id, column=ns.column,
                        bins=ns.bins, signals=ns.signal, version=ns.version)
    Path(ns.output).write_text(baseline.model_dump_json(indent=1) + "\n")
    print(f"wrote {ns.output}: {len(baseline.score.probs)} bins from {baseline.score.n} scores")
    return 0


def cmd_baseline_publish(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.baselines import publish

    publish(settings, Path(ns.file))
    print(f"published {ns.file} to {settings.topic('baselines')}")
    return 0


def cmd_control_keygen(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.core.signing import new_key

    print(f"TIERWATCH_CONTROL_KEY_ID={ns.key_id}\nTIERWATCH_CONTROL_KEY={new_key()}")
    return 0


def cmd_control_watch(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.control import watch

    return watch(settings, ns.router_id, max_messages=ns.max_messages)


def cmd_status(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.status import print_status

    return print_status(ns.url or f"http://127.0.0.1:{settings.web_port}", ns.router_id,
                        by=getattr(ns, "by", None))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tierwatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Handler, help: str,
                parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        _settings_flags(p)
        p.set_defaults(handler=handler)
        return p

    schemas = sub.add_parser("schemas", help="payload JSON Schemas").add_subparsers(
        dest="action", required=True)
    export = command("export", cmd_schemas_export, "write schemas/<name>.v1.schema.json",
                     schemas)
    export.add_argument("--dir", default="schemas")

    topics = sub.add_parser("topics", help="Kafka topics").add_subparsers(
        dest="action", required=True)
    command("create", cmd_topics_create, "create every tierwatch topic (idempotent)", topics)

    command("worker", cmd_worker, "run the streaming worker (faust)")

    sim = command("simulate", cmd_simulate, "generate seeded router traffic (JSONL or Kafka)")
    sim.add_argument("--scenario", default="pareto-trap",
                     help="pareto-trap, embedding-midmarket, fintech-conservative, cascade, "
                          "retrain or steady")
    sim.add_argument("--days", type=float, default=60.0)
    sim.add_argument("--rate", type=float, default=0.1, help="routing events per second")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--out", default="out/sim")
    sim.add_argument("--gzip", action="store_true")
    sim.add_argument("--kafka", action="store_true", help="produce to Kafka instead of files")
    sim.add_argument("--speedup", type=float, default=3600.0,
                     help="with --kafka: simulated seconds per wall second")

    rep = command("replay", cmd_replay, "run the monitor over routing/feedback files")
    rep.add_argument("--routing", required=True, help="JSONL, JSONL.gz or Parquet")
    rep.add_argument("--feedback")
    rep.add_argument("--baseline", action="append", default=[],
                     help="Baseline JSON (one per line); repeatable")
    rep.add_argument("--out", default="out/replay")

    demo = command("demo", cmd_demo, "simulate the Pareto trap, replay it, write the report")
    demo.add_argument("--days", type=float, default=120.0)
    demo.add_argument("--rate", type=float, default=0.05)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--kafka", action="store_true",
                      help="run through the real broker and the worker instead of in process")

    base = sub.add_parser("baseline", help="training baselines").add_subparsers(
        dest="action", required=True)
    fit = command("fit", cmd_baseline_fit, "fit a Baseline from training-set scores", base)
    fit.add_argument("--scores", required=True, help="CSV, JSONL or Parquet")
    fit.add_argument("--router-id", required=True)
    fit.add_argument("--column", default="score")
    fit.add_argument("--signal", action="append", default=[],
                     help="also fit this numeric column as a monitored signal; repeatable")
    fit.add_argument("--bins", type=int, default=200)
    fit.add_argument("--version", default=None)
    fit.add_argument("-o", "--output", default="baseline.json")
    pub = command("publish", cmd_baseline_publish, "publish a Baseline to the compacted topic",
                  base)
    pub.add_argument("file")

    control = sub.add_parser("control", help="the signed control topic").add_subparsers(
        dest="action", required=True)
    keygen = command("keygen", cmd_control_keygen, "print a new signing key", control)
    keygen.add_argument("--key-id", default="k1")
    watch = command("watch", cmd_control_watch, "tail and verify the control topic", control)
    watch.add_argument("--router-id", required=True)
    watch.add_argument("--max-messages", type=int, default=None)

    status = command("status", cmd_status, "print the worker's /status as a table")
    status.add_argument("--url", default=None)
    status.add_argument("--router-id", default=None)
    status.add_argument("--by", choices=["segment"], default=None,
                        help="break the tiers down by segment value (top values, 7d)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    handler: Handler = ns.handler
    return handler(ns, _settings(ns))


if __name__ == "__main__":
    sys.exit(main())
