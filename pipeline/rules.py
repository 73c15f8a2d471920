"""``tierwatch rules render``: the Prometheus alert rules of one installation.

``deploy/prometheus/rules.yml`` is written for the defaults: every ``runbook_url`` is the
repository path ``deploy/runbook.md#<section>`` and the worker's scrape job is
``tierwatch``. Rendering puts in the runbook base URL on-call can click
(``TIERWATCH_RUNBOOK_BASE_URL``) and the job label Prometheus gives the worker
(``TIERWATCH_PROMETHEUS_JOB``); comments and layout are kept, so the result reads (and
diffs) like the source.

>>> src = 'expr: up{job="tierwatch"} == 0\\nrunbook_url: deploy/runbook.md#worker_down\\n'
>>> print(render_rules(src, runbook_base="https://wiki.example.com/tw", job="llm-mon",
...                    header=False), end="")
expr: up{job="llm-mon"} == 0
runbook_url: "https://wiki.example.com/tw#worker_down"
"""

from __future__ import annotations

import json
import re

import yaml

from pipeline.core.alerts import runbook_link

DEFAULT_RUNBOOK = "deploy/runbook.md"
DEFAULT_JOB = "tierwatch"
_RUNBOOK_URL = re.compile(
    r"^(?P<key>[ \t]*runbook_url:[ \t]*)" + re.escape(DEFAULT_RUNBOOK)
    + r"#(?P<anchor>[\w-]+)[ \t]*$", re.M)
_JOB = re.compile(r'\bjob="' + re.escape(DEFAULT_JOB) + '"')


def render_rules(text: str, *, runbook_base: str, job: str, header: bool = True) -> str:
    """``text`` (rules written for the defaults) with this runbook base and job label."""
    if not job or any(c in job for c in '"\\\n'):
        raise ValueError(f"job label {job!r} must be non-empty, without quotes or backslashes")
    out = _RUNBOOK_URL.sub(
        lambda m: m["key"] + json.dumps(runbook_link(runbook_base, m["anchor"])), text)
    out = _JOB.sub(f'job="{job}"', out)
    _check(out, runbook_base)
    if header:
        out = (f"# Rendered by `tierwatch rules render` (job {job!r}, runbook "
               f"{runbook_base}); edit the source and render again.\n" + out)
    return out


def _check(text: str, runbook_base: str) -> None:
    """Every rule of the result links into ``runbook_base``; the YAML still parses."""
    prefix = runbook_base.split("#", 1)[0] + "#"
    doc = yaml.safe_load(text) or {}
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            url = (rule.get("annotations") or {}).get("runbook_url")
            if url is not None and not str(url).startswith(prefix):
                raise ValueError(f"rule {rule.get('alert')}: runbook_url {url!r} was not "
                                 f"rendered; write it as {DEFAULT_RUNBOOK}#<section>")
