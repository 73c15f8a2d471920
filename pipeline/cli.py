"""``tierwatch`` command line: a thin layer over the pipeline's entry points.

Each command takes, as flags, only the settings it uses: :class:`~pipeline.settings.Settings`
fields carry a ``group`` (``json_schema_extra={"group": "connection"}``) and each command
names the groups it reads. A flag wins over its ``TIERWATCH_*`` variable, which wins over
the default. Fields marked ``"secret": True`` are never flags (a flag shows in ``ps``): they
come from the environment or from their ``*_file`` setting.

A problem the user can fix (a missing file, a bad baseline or setting, an unreachable broker
or worker) prints one line, ``tierwatch <command>: error: <problem>; <what to do>``, and
exits with status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from types import UnionType
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline import kafka_clients
from pipeline.errors import UserError
from pipeline.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]

#: Title of each settings group in ``--help``, in the order shown; a group another module
#: adds without a title here is shown under its own name, after these.
GROUP_TITLES = {
    "connection": "Kafka connection",
    "topics": "topics",
    "input": "input limits",
    "statistics": "statistics",
    "economics": "economics",
    "delayed": "outcomes months later",
    "control": "control topic (signing)",
    "alerting": "alerting",
    "worker": "worker",
    "web": "worker web server",
    "logging": "logging",
    "other": "other",
}
ALL = ("*",)  # a command that reads every setting (the worker)


# -- settings as flags ------------------------------------------------------------------------
def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def setting_group(info: FieldInfo) -> str:
    """The ``--help`` group of a settings field (``other`` when it names none)."""
    return str(_extra(info).get("group", "other"))


def is_secret(info: FieldInfo) -> bool:
    return bool(_extra(info).get("secret"))


def env_names(name: str, info: FieldInfo) -> list[str]:
    """The environment variables a settings field reads.

    >>> env_names("web_port", Settings.model_fields["web_port"])
    ['TIERWATCH_WEB_PORT']
    >>> env_names("bootstrap_servers", Settings.model_fields["bootstrap_servers"])
    ['TIERWATCH_BOOTSTRAP_SERVERS', 'KAFKA_BOOTSTRAP_SERVERS']
    """
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        names = [a for a in alias.choices if isinstance(a, str) and a.isupper()]
        if names:
            return names
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return [f"{prefix}{name}".upper()]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(info: FieldInfo) -> str:
    default = info.default
    if default is PydanticUndefined or default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def _annotation(info: FieldInfo) -> Any:
    """The field's type, without ``| None``."""
    ann = info.annotation
    args = [a for a in get_args(ann) if a is not type(None)]
    if get_origin(ann) in (Union, UnionType) and len(args) == 1:
        return args[0]
    return ann


def _metavar(name: str, info: FieldInfo) -> str | None:
    """A short placeholder by type (``N``, ``SECONDS``, ``PATH``…); none with choices."""
    if _choices(info) is not None:
        return None
    ann = _annotation(info)
    if ann is int:
        return "N"
    if ann is float:
        return "SECONDS" if name.endswith("_s") else "X"
    if ann is str:
        return "TEXT"
    return "PATH" if "Path" in str(ann) else "VALUE"


def _choices(info: FieldInfo) -> list[str] | None:
    ann = _annotation(info)
    if get_origin(ann) is Literal:
        return [str(a) for a in get_args(ann)]
    if ann is bool:
        return ["true", "false"]
    return None


def _used(name: str, info: FieldInfo, uses: Sequence[str]) -> bool:
    return uses == ALL or setting_group(info) in uses or name in uses


def secret_fields(uses: Sequence[str]) -> list[tuple[str, FieldInfo]]:
    """The secret settings a command with these ``uses`` reads (never flags)."""
    return [(n, i) for n, i in Settings.model_fields.items() if is_secret(i) and _used(n, i, uses)]


def settings_fields(uses: Sequence[str]) -> dict[str, list[tuple[str, FieldInfo]]]:
    """The non-secret settings a command with these ``uses`` (group or field names, or
    :data:`ALL`) takes as flags, by group, in :data:`GROUP_TITLES` order."""
    chosen: dict[str, list[tuple[str, FieldInfo]]] = {}
    for name, info in Settings.model_fields.items():
        group = setting_group(info)
        if is_secret(info) or not _used(name, info, uses):
            continue
        chosen.setdefault(group, []).append((name, info))
    order = list(GROUP_TITLES)
    return dict(sorted(chosen.items(), key=lambda kv: (
        order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def _settings_flags(parser: argparse.ArgumentParser, uses: Sequence[str]) -> None:
    secrets = secret_fields(uses)
    if secrets:
        parser.epilog = "secrets (environment or their *_FILE setting, never a flag): " + \
            "; ".join(f"{' or '.join(env_names(n, i))} ({(i.description or n).rstrip('.')})"
                      for n, i in secrets)
    for group, fields in settings_fields(uses).items():
        title = GROUP_TITLES.get(group, group)
        box = parser.add_argument_group(f"{title} settings")
        for name, info in fields:
            env = " or ".join(env_names(name, info))
            text = (info.description or name.replace("_", " ")).rstrip(".")
            text = text.replace("%", "%%")
            box.add_argument(flag_name(name), dest=f"setting_{name}", default=argparse.SUPPRESS,
                             metavar=_metavar(name, info),
                             choices=_choices(info),
                             help=f"{text}. [env {env}; default: {_default_text(info)}]")


def load_settings(ns: argparse.Namespace) -> Settings:
    """The settings: flags over ``TIERWATCH_*`` variables over defaults; a bad value is a
    :class:`UserError` that names the setting and where to fix it."""
    overrides: dict[str, Any] = {k.removeprefix("setting_"): v for k, v in vars(ns).items()
                                 if k.startswith("setting_")}
    try:
        return Settings(**overrides)
    except ValidationError as err:
        e = err.errors()[0]
        msg = str(e["msg"]).removeprefix("Value error, ")
        name = next((str(p) for p in e["loc"] if str(p) in Settings.model_fields), "")
        if not name:  # a model-level check names its field first
            name = next((n for n in Settings.model_fields if msg.startswith(f"{n} ")), "")
        if not name:
            raise UserError(f"bad setting: {msg}", "fix the setting it names") from None
        info = Settings.model_fields[name]
        got = "" if is_secret(info) or not e["loc"] else f" (got {e.get('input')!r})"
        where = [*([] if is_secret(info) else [flag_name(name)]), *env_names(name, info)]
        raise UserError(f"bad setting {name}{got}: {msg}",
                        f"fix {' or '.join(where)}") from None


# -- argparse that speaks one line --------------------------------------------------------------
class _Help(argparse.HelpFormatter):
    """Shows each command flag's default; settings carry theirs in the help text."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (action.option_strings and "%(default)" not in text and "default:" not in text
                and default not in (None, False, [], argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        # no abbreviations: `--control-key` must not pass as `--control-key-id`
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line instead of the usage block, then exit 2."""
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


# -- checks before anything is written or sent ---------------------------------------------------
def input_file(path: str, what: str) -> Path:
    """``path`` if it is a readable file (a gzip or Parquet file must open as one)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} {p}: no such file", "check the path")
    if not p.is_file():
        raise UserError(f"{what} {p}: not a file", "give the path of a file")
    try:
        if p.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                pq.ParquetFile(p).close()
            except pa.ArrowException as err:
                raise UserError(f"{what} {p}: not a Parquet file ({err})",
                                "give JSON Lines(.gz) or Parquet") from None
        elif p.suffix == ".gz":
            import gzip

            with gzip.open(p, "rb") as f:  # to the end: a cut file fails there
                while f.read(1 << 20):
                    pass
        else:
            with p.open("rb") as f:
                f.read(1)
    except PermissionError:
        raise UserError(f"{what} {p}: permission denied", "make it readable") from None
    except (OSError, EOFError) as err:
        raise UserError(f"{what} {p}: cannot read it ({err})",
                        "check that the file is whole") from None
    return p


def output_dir(path: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"--out {p}: exists and is not a directory", "choose another --out")
    return p


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Keep a library's retry warnings off stderr while we decide what to tell the user."""
    log = logging.getLogger(logger)
    level, log.level = log.level, logging.CRITICAL + 1
    try:
        yield
    finally:
        log.setLevel(level)


def require_kafka(settings: Settings) -> None:
    """Connect to the cluster within ``connect_timeout_s`` with the connection settings
    (TLS, SASL), or raise a :class:`UserError` naming the cause."""
    kafka_clients.check_connection(settings)


# -- commands ----------------------------------------------------------------------------------
def cmd_schemas_export(ns: argparse.Namespace, _: Settings) -> int:
    from pipeline.schemas import export_schemas

    for path in export_schemas(Path(ns.dir)):
        print(path)
    return 0


def cmd_topics_create(ns: argparse.Namespace, settings: Settings) -> int:
    from kafka.errors import AuthorizationError, InvalidReplicationFactorError

    from pipeline.topics import create_topics

    require_kafka(settings)
    try:
        created = create_topics(settings)
    except InvalidReplicationFactorError as err:
        raise UserError(f"the cluster cannot hold {settings.replication_factor} replicas "
                        f"({err.description or err})",
                        "pass --replication-factor at most the number of brokers") from None
    except AuthorizationError as err:
        raise UserError(f"not allowed to create topics ({type(err).__name__})",
                        "ask for CREATE on the topics, or have an admin run `topics create`"
                        ) from None
    for topic, state in created.items():
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

        require_kafka(settings)
        return stream_simulation(settings, ns.scenario, days=ns.days, rate=ns.rate,
                                 seed=ns.seed, speedup=ns.speedup)
    output_dir(ns.out)
    routing, feedback, _, _ = simulate(ns.scenario, Path(ns.out), days=ns.days,
                                       rate=ns.rate, seed=ns.seed, gzip=ns.gzip)
    print(f"wrote {routing}, {feedback}, baseline.json, truth.json in {ns.out}")
    return 0


def cmd_replay(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.baselines import read_baselines

    # every input is checked before the output directory is touched (and before the
    # monitor's heavy imports, so a mistake is reported at once)
    routing = input_file(ns.routing, "--routing")
    feedback = input_file(ns.feedback, "--feedback") if ns.feedback else None
    baselines = [b for path in ns.baseline
                 for b in read_baselines(input_file(path, "--baseline"))]
    out = output_dir(ns.out)

    from pipeline.bootstrap import build_monitor
    from pipeline.replay import Replay, read_alerts
    from pipeline.report.build import report_data
    from pipeline.report.render import write_report

    monitor = build_monitor(settings, record=True)
    result = Replay(settings, monitor, out).run(routing, feedback, baselines)
    alerts = read_alerts(out / "alerts.jsonl")
    summary: dict[str, Any] = {"events": result.events, "seconds": round(result.seconds, 3),
                               "outputs": result.outputs, "counts": result.counts,
                               "dead_letters": result.dead_letters, "routers": {}}
    reports = []
    for router_id in sorted(monitor.routers):
        data = report_data(monitor, router_id, alerts, onset_ts=None,
                           generated_from=str(ns.routing))
        if "://" in settings.runbook_base_url:  # a path would make the report depend on --out
            data = data.model_copy(update={"runbook_base": settings.runbook_base_url})
        name = "report.html" if len(monitor.routers) == 1 else f"report-{router_id}.html"
        reports.append(write_report(data, out / name))
        summary["routers"][router_id] = data.to_dict()
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    for line in result.summary():
        if line.startswith("warning:"):
            print(f"{line}; see {out / 'dlq.jsonl'}", file=sys.stderr)
        else:
            print(line)
    if not baselines:
        print("warning: no --baseline given, so no drift was measured", file=sys.stderr)
    routers = [f"{r} ({n:,} routing events)" for r, n in _per_router(result.counts)]
    print(f"routers: {', '.join(routers) or 'none (no valid routing event)'}")
    print(f"wrote {out}/: alerts.jsonl, control.jsonl, review.jsonl, dlq.jsonl, "
          f"summary.json, {', '.join(Path(r).name for r in reports) or 'no report'}")
    return 0


def _per_router(counts: dict[str, int]) -> list[tuple[str, int]]:
    per: dict[str, int] = {}
    for key, n in counts.items():
        router = key.split("/", 1)[0]
        per[router] = per.get(router, 0) + n
    return sorted(per.items())


def cmd_demo(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.demo import run_demo

    output_dir(ns.out)
    if ns.kafka:
        from pipeline.live import kafka_demo

        require_kafka(settings)
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
    print(f"wrote {ns.output}: {len(baseline.score.probs)} bins from {baseline.score.n} scores"
          + (f", signals {', '.join(sorted(baseline.signals))}" if baseline.signals else ""))
    return 0


def cmd_baseline_publish(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.baselines import publish, read_baselines

    read_baselines(input_file(ns.file, "baseline file"))  # a bad file: no connection at all
    require_kafka(settings)
    sent = publish(settings, Path(ns.file))
    print(f"published {len(sent)} baseline(s) from {ns.file} to {settings.topic('baselines')}: "
          + ", ".join(f"{b.router_id} ({b.version})" for b in sent))
    return 0


def cmd_control_keygen(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.core.signing import new_key

    print(f"TIERWATCH_CONTROL_KEY_ID={ns.key_id}\nTIERWATCH_CONTROL_KEY={new_key()}")
    return 0


def cmd_control_watch(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.control import watch

    require_kafka(settings)
    print(f"watching {settings.topic('control')} for router {ns.router_id} from the start "
          f"(key id {settings.control_key_id}); Ctrl-C stops", file=sys.stderr, flush=True)
    return watch(settings, ns.router_id, max_messages=ns.max_messages)


def cmd_status(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.status import print_status

    return print_status(ns.url or f"http://127.0.0.1:{settings.web_port}", ns.router_id,
                        timeout=settings.connect_timeout_s, by=getattr(ns, "by", None))


def cmd_rules_render(ns: argparse.Namespace, settings: Settings) -> int:
    from pipeline.rules import render_rules

    text = render_rules(input_file(ns.rules, "--rules").read_text(),
                        runbook_base=settings.runbook_base_url, job=settings.prometheus_job)
    if "://" not in settings.runbook_base_url:
        print(f"warning: runbook_url links start with {settings.runbook_base_url!r}, not a URL; "
              "set TIERWATCH_RUNBOOK_BASE_URL to where on-call reads the runbook",
              file=sys.stderr)
    if ns.output == "-":
        sys.stdout.write(text)
    else:
        Path(ns.output).write_text(text)
        print(f"wrote {ns.output} (job {settings.prometheus_job!r}, runbook "
              f"{settings.runbook_base_url})")
    return 0


# -- the parser ----------------------------------------------------------------------------------
def _version() -> str:
    try:
        return metadata.version("tierwatch")
    except metadata.PackageNotFoundError:
        return "unknown"


#: the names of pipeline/sim/scenarios.py's SCENARIOS, kept here so that building the parser
#: does not import the simulator (tests/unit/test_cli.py holds the two equal)
SCENARIO_NAMES = ["cascade", "embedding-midmarket", "fintech-conservative", "pareto-trap",
                  "retrain", "steady"]
DEFAULT_RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yml"
REPLAY_USES = ("input", "statistics", "economics", "control", "runbook_base_url")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tierwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tierwatch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help: str, uses: Sequence[str] = (),
                parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler, uses=tuple(uses))
        return p

    def settings(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add the settings flags last, below the command's own; the usage line names
        only the command's own flags."""
        if settings_fields(p.get_default("uses")):
            own = p.format_usage().removeprefix("usage: ").strip()
            p.usage = " ".join(own.split()) + " [SETTINGS]"
            _settings_flags(p, p.get_default("uses"))
        return p

    def family(name: str, help: str) -> Any:
        return sub.add_parser(name, help=help, description=help).add_subparsers(
            dest="action", required=True, metavar="ACTION")

    schemas = family("schemas", "payload JSON Schemas")
    export = command("export", cmd_schemas_export, "write schemas/<name>.v1.schema.json",
                     parent=schemas)
    export.add_argument("--dir", default="schemas", help="where to write them")

    topics = family("topics", "Kafka topics")
    settings(command("create", cmd_topics_create, "create every tierwatch topic (idempotent)",
                     ("connection", "topics"), topics))

    settings(command("worker", cmd_worker, "run the streaming worker (faust)", ALL))

    sim = command("simulate", cmd_simulate, "generate seeded router traffic (JSONL or Kafka)",
                  ("connection", "topic_prefix"))
    sim.add_argument("--scenario", default="pareto-trap", choices=SCENARIO_NAMES,
                     help="the scenario to simulate")
    sim.add_argument("--days", type=float, default=60.0, help="days of traffic")
    sim.add_argument("--rate", type=float, default=0.1, help="routing events per second")
    sim.add_argument("--seed", type=int, default=7, help="random seed")
    sim.add_argument("--out", default="out/sim", help="output directory (files)")
    sim.add_argument("--gzip", action="store_true", help="gzip the JSONL files")
    sim.add_argument("--kafka", action="store_true", help="produce to Kafka instead of files")
    sim.add_argument("--speedup", type=float, default=3600.0,
                     help="with --kafka: simulated seconds per wall second")
    settings(sim)

    rep = command("replay", cmd_replay, "run the monitor over routing/feedback files",
                  REPLAY_USES)
    rep.add_argument("--routing", required=True, metavar="FILE",
                     help="routing events: JSONL, JSONL.gz or Parquet")
    rep.add_argument("--feedback", metavar="FILE", help="feedback events, same formats")
    rep.add_argument("--baseline", action="append", default=[], metavar="FILE",
                     help="baseline file (as `baseline fit` writes it, a JSON list, or JSON "
                          "Lines); repeatable")
    rep.add_argument("--out", default="out/replay", metavar="DIR", help="output directory")
    settings(rep)

    demo = command("demo", cmd_demo, "simulate the Pareto trap, replay it, write the report",
                   (*REPLAY_USES, "connection", "topic_prefix", "web"))
    demo.add_argument("--days", type=float, default=120.0, help="days of traffic")
    demo.add_argument("--rate", type=float, default=0.05, help="routing events per second")
    demo.add_argument("--seed", type=int, default=7, help="random seed")
    demo.add_argument("--out", default="out/demo", help="output directory")
    demo.add_argument("--kafka", action="store_true",
                      help="run through the real broker and the worker instead of in process")
    settings(demo)

    base = family("baseline", "training baselines")
    fit = command("fit", cmd_baseline_fit, "fit a Baseline from training-set scores",
                  parent=base)
    fit.add_argument("--scores", required=True, metavar="FILE", help="CSV, JSONL(.gz) or Parquet")
    fit.add_argument("--router-id", required=True, help="the router the baseline is for")
    fit.add_argument("--column", default="score", help="the score column")
    fit.add_argument("--signal", action="append", default=[],
                     help="also fit this numeric column as a monitored signal; repeatable")
    fit.add_argument("--bins", type=int, default=200, help="equal-mass fine bins")
    fit.add_argument("--baseline-version", "--version", dest="version", default=None,
                     help="version string (default: <router-id>:<UTC time>)")
    fit.add_argument("-o", "--output", default="baseline.json", metavar="FILE",
                     help="file to write")
    pub = settings(command("publish", cmd_baseline_publish,
                           "publish the Baseline(s) of a file to the compacted topic",
                           ("connection", "topic_prefix"), base))
    pub.add_argument("file", help="a baseline file, as `baseline fit` writes it")

    control = family("control", "the signed control topic")
    keygen = command("keygen", cmd_control_keygen, "print a new signing key", parent=control)
    keygen.add_argument("--key-id", default="k1", help="the key's id")
    watch = command("watch", cmd_control_watch, "tail and verify the control topic",
                    ("connection", "topic_prefix", "control_key_id", "control_key",
                     "control_key_file"), control)
    watch.add_argument("--router-id", required=True, help="the router whose messages to check")
    watch.add_argument("--max-messages", type=int, default=None,
                       help="stop after this many (default: follow until Ctrl-C)")
    settings(watch)

    status = command("status", cmd_status, "print the worker's /status as a table",
                     ("web", "connect_timeout_s"))
    status.add_argument("--url", default=None,
                        help="the worker's base URL (default: http://127.0.0.1:<web port>)")
    status.add_argument("--router-id", default=None, help="only this router")
    status.add_argument("--by", choices=["segment", "cohort"], default=None,
                        help="break the tiers down by segment value (top values, 7d), or "
                        "show the delayed outcomes by weekly cohort")
    settings(status)

    rules = family("rules", "Prometheus alert rules")
    render = command("render", cmd_rules_render, "write the alert rules with this "
                     "installation's runbook URL and job label", ("alerting",), rules)
    render.add_argument("--rules", default=str(DEFAULT_RULES), help="the rules to render")
    render.add_argument("-o", "--output", default="-", help="file to write; - for stdout")
    settings(render)
    return parser


def _fail(ns: argparse.Namespace | None, message: str) -> int:
    prog = " ".join(["tierwatch", *(v for v in (getattr(ns, "command", None),
                                                 getattr(ns, "action", None)) if v)])
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def _unknown(ns: argparse.Namespace, extra: list[str]) -> str:
    """What to say about flags the command does not take; a secret's value is not echoed."""
    for name, info in Settings.model_fields.items():
        flag = flag_name(name)
        if is_secret(info) and any(a == flag or a.startswith(flag + "=") for a in extra):
            return (f"{flag} is not a flag: a secret on the command line shows in `ps`; set "
                    f"{' or '.join(env_names(name, info))}, or its *_FILE setting")
    command = " ".join(v for v in (ns.command, getattr(ns, "action", None)) if v)
    return (f"unrecognized arguments: {' '.join(extra)}; see `tierwatch {command} --help` "
            "for the flags it takes")


def main(argv: Sequence[str] | None = None) -> int:
    ns, extra = build_parser().parse_known_args(argv)
    if extra:
        return _fail(ns, _unknown(ns, extra))
    handler: Handler = ns.handler
    try:
        return handler(ns, load_settings(ns))
    except UserError as err:
        return _fail(ns, str(err))
    except KeyboardInterrupt:
        return 130
    except OSError as err:  # the surroundings: a path, a permission, a full disk
        where = f"{err.filename}: " if err.filename else ""
        return _fail(ns, f"{where}{err.strerror or err}; check the path and its permissions")


if __name__ == "__main__":
    sys.exit(main())
