"""The command line explains itself: one-line errors with exit 2, and help that fits.

Every user error gives exactly one line naming the problem and what to do, status 2, no
traceback, and nothing written before the inputs were checked. Here they run in process;
a few run through the real ``tierwatch`` executable, so stderr is what a user sees, in
``tests/integration/test_cli_executable.py``. No broker is needed: an unreachable one is a
closed port on this machine.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main, settings_fields
from pipeline.settings import Settings

TIERWATCH = Path(sys.executable).with_name("tierwatch")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once the socket is


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    routing = d / "routing.jsonl"
    routing.write_text('{"event_id": "e1"}\n')
    bad_baseline = d / "bad-baseline.json"
    bad_baseline.write_text('{"router_id": "support", "version": "v1"}\n')
    broken_gz = d / "routing.jsonl.gz"
    broken_gz.write_bytes(gzip.compress(b'{"event_id": "e1"}\n')[:12])
    scores = d / "scores.csv"
    scores.write_text("score\n0.2\n1.7\n")
    return {"dir": d, "routing": routing, "bad_baseline": bad_baseline,
            "broken_gz": broken_gz, "scores": scores}


def _cases(f: dict[str, Path], work: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name: (argv, environment, a phrase the one line must contain)."""
    nowhere = f"127.0.0.1:{_closed_port()}"
    fast = {"TIERWATCH_CONNECT_TIMEOUT_S": "1"}
    out = str(work / "out")
    return {
        "missing input file": (["replay", "--routing", "missing.jsonl", "--out", out], {},
                               "no such file"),
        "broken gzip": (["replay", "--routing", str(f["broken_gz"]), "--out", out], {},
                        "cannot read it"),
        "input is a directory": (["replay", "--routing", str(f["dir"]), "--out", out], {},
                                 "not a file"),
        "malformed baseline": (["replay", "--routing", str(f["routing"]), "--baseline",
                                str(f["bad_baseline"]), "--out", out], {},
                               "not a valid Baseline"),
        "missing baseline": (["baseline", "publish", "missing.json"], {}, "no such file"),
        "malformed baseline to publish": (["baseline", "publish", str(f["bad_baseline"])],
                                          {}, "not a valid Baseline"),
        "missing scores": (["baseline", "fit", "--scores", "missing.parquet", "--router-id",
                            "support", "-o", out + ".json"], {}, "no such scores file"),
        "scores outside [0, 1]": (["baseline", "fit", "--scores", str(f["scores"]),
                                   "--router-id", "support", "-o", out + ".json"], {},
                                  "must lie in [0, 1]"),
        "bad setting in the environment": (["replay", "--routing", str(f["routing"]), "--out",
                                            out], {"TIERWATCH_EVAL_EVERY_S": "-5"},
                                           "TIERWATCH_EVAL_EVERY_S"),
        "bad setting as a flag": (["replay", "--routing", str(f["routing"]), "--out", out,
                                   "--eval-every-s", "hourly"], {}, "--eval-every-s"),
        "short secret": (["replay", "--routing", str(f["routing"]), "--out", out],
                         {"TIERWATCH_CONTROL_KEY": "short"}, "TIERWATCH_CONTROL_KEY"),
        "missing key file": (["replay", "--routing", str(f["routing"]), "--out", out],
                             {"TIERWATCH_CONTROL_KEY_FILE": "missing.key"},
                             "control_key_file"),
        "unknown scenario": (["simulate", "--scenario", "black-friday", "--out", out], {},
                             "invalid choice"),
        "unknown command": (["replya"], {}, "invalid choice"),
        "missing argument": (["replay"], {}, "--routing"),
        "no worker running": (["status"], {"TIERWATCH_WEB_PORT": str(_closed_port()), **fast},
                              "start one with `tierwatch worker`"),
        "no broker for control watch": (["control", "watch", "--router-id", "support"],
                                        {"KAFKA_BOOTSTRAP_SERVERS": nowhere, **fast},
                                        "Kafka"),
        "no broker for topics create": (["topics", "create"],
                                        {"KAFKA_BOOTSTRAP_SERVERS": nowhere, **fast},
                                        "Kafka"),
    }


CASES = sorted(_cases({k: Path("/x") for k in
                       ("dir", "routing", "bad_baseline", "broken_gz", "scores")}, Path("/x")))


#: run through the installed executable, the way a user meets them
#: (tests/integration/test_cli_executable.py); the rest in process, here
REAL = {"missing input file", "malformed baseline", "no worker running",
        "no broker for control watch", "bad setting in the environment"}


def _in_process(argv: list[str], env: dict[str, str], cwd: Path,
                monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    for name in list(os.environ):
        if name.startswith("TIERWATCH_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], phrase: str,
                          cwd: Path) -> None:
    """Status 2, one line on stderr naming the problem, nothing on stdout, nothing written."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tierwatch"), lines[0]
    assert ": error: " in lines[0] and phrase in lines[0], lines[0]
    assert proc.stdout == ""
    # inputs are checked before anything is written
    assert sorted(p.name for p in cwd.iterdir()) == []


@pytest.mark.parametrize("case", [c for c in CASES if c not in REAL])
def test_a_user_error_is_one_line_and_exit_2(case: str, files: dict[str, Path],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    argv, env, phrase = _cases(files, tmp_path)[case]
    assert_one_line_error(_in_process(argv, env, tmp_path, monkeypatch, capsys), phrase,
                          tmp_path)


# ---------------------------------------------------------------- help and flags
def _help(*command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    return out.getvalue()


def test_each_command_shows_only_the_settings_it_uses() -> None:
    replay = _help("replay")
    assert "--eval-every-s" in replay and "--false-alarms-per-30d" in replay
    for absent in ("--bootstrap-servers", "--app-id", "--web-port", "--checkpoint-dir"):
        assert absent not in replay, absent
    status = _help("status")
    assert "--web-port" in status and "--eval-every-s" not in status
    publish = _help("baseline", "publish")
    assert "--bootstrap-servers" in publish and "--eval-every-s" not in publish
    assert len(replay.splitlines()) < 70, "replay --help is too long again"


def test_the_worker_takes_every_setting_but_secrets_as_flags() -> None:
    worker = _help("worker")
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        secret = isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("secret")
        if secret:
            assert f"{flag} " not in worker and f"{flag}\n" not in worker, flag
            assert f"TIERWATCH_{name.upper()}" in worker, f"{name}: secret not named in help"
        else:
            assert flag in worker, flag


@pytest.mark.parametrize("how", [["--control-key", "0123456789abcdef0123"],
                                 ["--control-key=0123456789abcdef0123"]])
def test_a_secret_is_never_a_flag(how: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--routing", "x.jsonl", *how]) == 2
    err = capsys.readouterr().err
    assert "--control-key is not a flag" in err and "TIERWATCH_CONTROL_KEY" in err
    assert "0123456789abcdef0123" not in err  # the secret is not repeated
    assert len(err.splitlines()) == 1


def test_a_flag_of_another_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "--routing", "x.jsonl", "--web-port", "7000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tierwatch replay: error: unrecognized arguments: --web-port 7000")
    assert "`tierwatch replay --help`" in err


def test_help_shows_defaults_groups_and_the_environment() -> None:
    replay = _help("replay")
    assert "statistics settings:" in replay and "input limits settings:" in replay
    assert "default: 3600" in " ".join(replay.split())
    assert "TIERWATCH_EVAL_EVERY_S" in replay
    assert "(default: out/replay)" in replay


def test_every_setting_belongs_to_a_group() -> None:
    """A new setting without a group would land in "other", shown by the worker only."""
    assert "other" not in settings_fields(("*",))


def test_the_scenario_choices_are_the_simulator_s() -> None:
    from pipeline.cli import SCENARIO_NAMES
    from pipeline.sim.scenarios import SCENARIOS

    assert sorted(SCENARIOS) == SCENARIO_NAMES


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("tierwatch ")


def test_a_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import load_settings

    monkeypatch.setenv("TIERWATCH_EVAL_EVERY_S", "60")
    assert load_settings(build_parser().parse_args(["replay", "--routing", "r"])
                         ).eval_every_s == 60
    assert load_settings(build_parser().parse_args(
        ["replay", "--routing", "r", "--eval-every-s", "120"])).eval_every_s == 120


def test_the_control_key_can_come_from_a_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "control.key"
    key.write_text("ab" * 32 + "\n")
    monkeypatch.setenv("TIERWATCH_CONTROL_KEY_FILE", str(key))
    assert Settings().control_key == "ab" * 32
