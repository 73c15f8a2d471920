"""``tierwatch`` command line: a thin layer over the pipeline's entry points.

Every :class:`~pipeline.settings.Settings` field is also a flag (``--web-port 6067``),
so a flag, a ``TIERWATCH_*`` variable and the default are read in that order.
"""

from __future__ import annotations

import argparse
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    handler: Handler = ns.handler
    return handler(ns, _settings(ns))


if __name__ == "__main__":
    sys.exit(main())
