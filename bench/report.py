"""The benchmark document (issue 11), generated from ``bench.run``'s JSON results, never typed.

    python -m bench.report bench/results/bench-*.json --out docs/benchmarks.md --charts docs/bench

Reads the result files (one per ``bench.run`` invocation; several runs of the same scenarios
give the run-to-run variance) and writes Markdown: the runs (file, date, git commit, command),
the machine, the issue-11 targets and whether the median run meets them, a table per scenario
group (median across runs and the min-max spread), one table of ratios against the bare fan-out
and the peers (each ratio from figures of one file only), the cost curve (S2's server CPU per
delivered message against the number of rooms; ``<charts>/cost.svg``) and the soak (S2 for
10 minutes: server RSS over time; ``<charts>/soak.svg``). The charts are plain SVG written here.

What is read, per file: ``started``, ``command``, ``smoke``, ``generator_loop``, ``machine``,
``git`` ({"commit", "dirty"}: the commit measured; ``--commit`` stands in for files without it)
and ``results``; per result: ``scenario``, ``target``, ``mode``, ``rooms``, ``connections``,
``seconds``, ``warmup_s``, ``server_cpu_pct``, ``delivered_per_s``, ``fanout_ms`` (``relay_ms``,
``relay_ms_final`` for S6), ``ack_ms``, ``lost``, ``dup``, ``server_rss_mib``, ``held``,
``server_rss_before_mib``, ``rss_per_conn_kib`` (idle), ``rss_timeline_mib`` ([[s, MiB], ...]
from the start of the measuring window) and ``intervals`` (the soak's per-interval figures:
[{"t_s", "server_cpu_pct", "fanout_ms": {"p99"}, ...}], when the generator records them).
Anything missing is written as "not measured"; a file without ``results`` is listed and skipped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from bench.scenarios import FULL

Result = dict[str, Any]

NOT_MEASURED = "not measured"
DASH = "\u2013"  # an en dash: "median (min\u2013max)"
TIMES = "\u00d7"  # a multiplication sign
PEERS = ("socketio", "node", "bare")  # the targets our scenarios are compared with
TARGET_ORDER = ("menteo", "socketio", "node", "bare")
TARGET_NAMES = {
    "menteo": "Menteo Rooms",
    "socketio": "python-socketio",
    "node": "Node.js Socket.IO",
    "bare": "bare fan-out",
}
FULL_ROOMS = {s.name.upper(): s.rooms for s in FULL}  # the size the targets are set at
SCENARIO_ORDER = [s.name.upper() for s in FULL]
FULL_SIZES = ("S2", "S3", "S4", "S5", "S6")  # the sizes the targets section names

COST_ROOMS = (250, 500, 1000, 2000)  # issue 11: S2 at these sizes
COST_FLAT = 0.20  # "flat": no size's median CPU per message > 1.2 x the smallest size's
SOAK_SECONDS = 600.0  # an S2 result measured this long (or longer) is the soak
SOAK_GROWTH_PCT = 5.0  # RSS after warm-up grows by less than this
SOAK_DRIFT = 0.20  # "CPU and p99 stay where they were in the first minute": within +20%


# reading -----------------------------------------------------------------------------------
@dataclass
class Run:
    """One result file: one ``bench.run`` invocation."""

    path: Path
    data: dict[str, Any]
    commit: str | None = None
    dirty: bool | None = None
    commit_from: str = ""  # "file" (its git key), "J1" (a result's code key), "--commit"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def started(self) -> str:
        return str(self.data.get("started") or "")

    @property
    def smoke(self) -> bool:
        return bool(self.data.get("smoke"))

    @property
    def results(self) -> list[Result]:
        got = self.data.get("results")
        return [r for r in got if isinstance(r, dict)] if isinstance(got, list) else []


@dataclass(frozen=True)
class Measure:
    """One scenario result and the file it comes from."""

    run: Run
    r: Result

    @property
    def scenario(self) -> str:
        return str(self.r.get("scenario") or "?")


def load(paths: Sequence[Path], commit: str | None = None) -> tuple[list[Run], list[str]]:
    """The readable result files, oldest first; and what was wrong with the others."""
    runs: list[Run] = []
    problems: list[str] = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: unreadable ({exc.__class__.__name__})")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            problems.append(f"{path}: no `results` list (not a `bench.run` result file)")
            continue
        run = Run(path, data)
        run.commit, run.dirty, run.commit_from = commit_of(data, commit)
        runs.append(run)
    runs.sort(key=lambda r: (r.started, r.name))
    return runs, problems


def commit_of(data: dict[str, Any], fallback: str | None) -> tuple[str | None, bool | None, str]:
    """The commit measured: the file's ``git`` key, else a result's ``code`` key (J1 records
    one), else ``fallback`` (``--commit``)."""
    git = data.get("git")
    if isinstance(git, dict) and git.get("commit"):
        dirty = git.get("dirty")
        return str(git["commit"]), dirty if isinstance(dirty, bool) else None, "file"
    for r in data.get("results") or []:
        code = r.get("code") if isinstance(r, dict) else None
        if isinstance(code, dict) and code.get("commit"):
            return str(code["commit"]), bool(code.get("uncommitted")), "J1"
    if fallback:
        return fallback, None, "--commit"
    return None, None, ""


# figures of one result ---------------------------------------------------------------------
def num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        return None
    return float(v)


def rooms_of(r: Result) -> int | None:
    """``rooms``, or half the connections (a result that failed early has only those)."""
    if isinstance(r.get("rooms"), int):
        return int(r["rooms"])
    return r["connections"] // 2 if isinstance(r.get("connections"), int) else None


def measured(r: Result) -> bool:
    return "error" not in r and "skipped" not in r


def pctl(d: Any, q: str) -> float | None:
    return num(d.get(q)) if isinstance(d, dict) else None


def latency(r: Result) -> dict[str, Any] | None:
    """Fan-out percentiles; for S6 the notes relay, with the late relays when there were."""
    for key in ("relay_ms_final", "relay_ms", "fanout_ms"):
        if isinstance(r.get(key), dict):
            return dict(r[key])
    return None


def cpu_ms_per_msg(r: Result) -> float | None:
    """Server CPU milliseconds per delivered message: cpu% / 100 * 1000 / delivered/s."""
    cpu, delivered = num(r.get("server_cpu_pct")), num(r.get("delivered_per_s"))
    if cpu is None or not delivered:
        return None
    return cpu / 100 * 1000 / delivered


def timeline(r: Result) -> list[tuple[float, float]]:
    """``rss_timeline_mib``: [(seconds since the measuring window opened, MiB)]."""
    out = []
    for p in r.get("rss_timeline_mib") or []:
        if isinstance(p, list | tuple) and len(p) >= 2:
            t, mib = num(p[0]), num(p[1])
            if t is not None and mib is not None:
                out.append((t, mib))
    return out


def rss_growth_pct(r: Result) -> float | None:
    """RSS growth from the first sample of the window (after warm-up) to the last."""
    points = timeline(r)
    if len(points) >= 2 and points[0][1] > 0:
        return 100 * (points[-1][1] - points[0][1]) / points[0][1]
    return num(r.get("rss_growth_pct"))


@dataclass(frozen=True)
class Metric:
    header: str
    get: Callable[[Result], float | None]
    digits: int = 1
    applies: Callable[[Result], bool] = lambda r: True


def _lat(q: str) -> Callable[[Result], float | None]:
    return lambda r: pctl(latency(r), q)


def _key(name: str) -> Callable[[Result], float | None]:
    return lambda r: num(r.get(name))


def _sub(name: str, q: str) -> Callable[[Result], float | None]:
    return lambda r: pctl(r.get(name), q)


CPU = Metric("server CPU %", _key("server_cpu_pct"))
PER_MSG = Metric("CPU ms / msg", cpu_ms_per_msg, 3)
P99 = Metric("fan-out p99 ms", _lat("p99"))
DELIVERED = Metric("delivered/s", _key("delivered_per_s"), 0)
RSS = Metric("RSS MiB", _key("server_rss_mib"))
PER_CONN = Metric("RSS / conn KiB", _key("rss_per_conn_kib"), 2)

TRAFFIC = [
    CPU,
    PER_MSG,
    Metric("fan-out p50 ms", _lat("p50")),
    Metric("fan-out p95 ms", _lat("p95")),
    P99,
    Metric("ack p99 ms", _sub("ack_ms", "p99"), applies=lambda r: r.get("mode") != "notes"),
    DELIVERED,
    Metric("lost", _key("lost"), 0),
    Metric("dup", _key("dup"), 0),
    RSS,
]
IDLE = [
    Metric("held", _key("held"), 0),
    CPU,
    Metric("RSS before MiB", _key("server_rss_before_mib")),
    RSS,
    PER_CONN,
]
JOURNEY = [
    Metric("search p50 ms", _sub("search_ms", "p50")),
    Metric("search p95 ms", _sub("search_ms", "p95")),
    Metric("search p99 ms", _sub("search_ms", "p99")),
    Metric("welcome warm p95 ms", _sub("welcome_warm_ms", "p95")),
    Metric("welcome cold p95 ms", _sub("welcome_cold_ms", "p95")),
    Metric("journey JSON p50 ms", _sub("journey_json_ms", "p50")),
    RSS,
]
OTHER = [CPU, RSS]


def metrics_for(mode: str) -> list[Metric]:
    if mode in ("rate", "saturate", "notes"):
        return TRAFFIC
    return {"idle": IDLE, "journey": JOURNEY}.get(mode, OTHER)


# across runs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spread:
    """A figure across runs: its median and its min-max spread."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)


def spread(values: Iterable[float | None]) -> Spread | None:
    got = tuple(v for v in values if v is not None)
    return Spread(got) if got else None


def fmt(v: float | None, digits: int = 1) -> str:
    return NOT_MEASURED if v is None else f"{v:,.{digits}f}"


def cell(s: Spread | None, digits: int = 1) -> str:
    """The median across runs with its min-max spread; the value alone from one run."""
    if s is None:
        return NOT_MEASURED
    if s.n == 1:
        return fmt(s.median, digits)
    return f"{fmt(s.median, digits)} ({fmt(s.lo, digits)}{DASH}{fmt(s.hi, digits)})"


# scenario tables ---------------------------------------------------------------------------
@dataclass
class Row:
    """One scenario at one size across runs."""

    scenario: str
    target: str
    mode: str
    connections: int | None
    seconds: float | None
    smoke: bool
    measures: list[Measure] = field(default_factory=list)
    failures: list[tuple[Run, str]] = field(default_factory=list)

    @property
    def rooms(self) -> int | None:
        for m in self.measures:
            if isinstance(m.r.get("rooms"), int):
                return int(m.r["rooms"])
        return None if self.connections is None else self.connections // 2

    def spread(self, metric: Metric) -> Spread | None:
        return spread(metric.get(m.r) for m in self.measures)

    def applies(self, metric: Metric) -> bool:
        return not self.measures or any(metric.applies(m.r) for m in self.measures)


def group_of(scenario: str) -> str:
    return scenario.split("-")[0].upper()


def scenario_rank(name: str) -> tuple[int, str]:
    name = name.upper()
    return (SCENARIO_ORDER.index(name), name) if name in SCENARIO_ORDER else (999, name)


def target_rank(target: str) -> int:
    return TARGET_ORDER.index(target) if target in TARGET_ORDER else len(TARGET_ORDER)


def rows(runs: Sequence[Run]) -> dict[str, list[Row]]:
    """Every result by scenario group, then by scenario and size (connections, seconds)."""
    found: dict[tuple[str, int | None, float | None, bool], Row] = {}
    for run in runs:
        for r in run.results:
            name = str(r.get("scenario") or "?")
            conns = r.get("connections") if isinstance(r.get("connections"), int) else None
            secs = num(r.get("seconds"))
            key = (name, conns, secs, run.smoke)
            if key not in found:
                found[key] = Row(
                    name,
                    str(r.get("target") or "?"),
                    str(r.get("mode") or "?"),
                    conns,
                    secs,
                    run.smoke,
                )
            row = found[key]
            if measured(r):
                row.measures.append(Measure(run, r))
            else:
                why = f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r['error']}"
                row.failures.append((run, why))
    groups: dict[str, list[Row]] = {}
    for row in found.values():
        groups.setdefault(group_of(row.scenario), []).append(row)
    for g in groups.values():
        g.sort(
            key=lambda x: (
                target_rank(x.target),
                scenario_rank(x.scenario),
                x.smoke,
                x.connections or 0,
                x.seconds or 0,
            )
        )
    return dict(sorted(groups.items(), key=lambda kv: scenario_rank(kv[0])))


def md_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(headers), line(["---"] * len(headers)), *(line(b) for b in body)]


def size_label(row: Row) -> str:
    return size_text(row.mode, row.rooms, row.connections, row.seconds, row.smoke)


def size_text(
    mode: str, rooms: int | None, connections: int | None, seconds: float | None, smoke: bool
) -> str:
    """ "1,000 rooms, 20 s"; "10,000 connections, 5 s" (idle); "(smoke)" for a smoke run."""
    if mode == "idle":
        size = f"{connections:,} connections" if connections else "?"
    elif mode == "journey":
        size = "-"
    else:
        size = f"{rooms:,} rooms" if rooms else "?"
    if seconds is not None and mode != "journey":
        size += f", {seconds:g} s"
    return size + (" (smoke)" if smoke else "")


def group_section(name: str, group: list[Row]) -> list[str]:
    modes = {r.mode for r in group if r.measures} or {group[0].mode}
    mode = "rate" if modes & {"rate", "saturate", "notes"} else sorted(modes)[0]
    metrics = metrics_for(mode)
    title = next(
        (str(m.r.get("title")) for r in group for m in r.measures if r.scenario == name), ""
    )
    out = [f"### {name}" + (f": {title}" if title else ""), ""]
    relay = "relay" if modes == {"notes"} else "fan-out (relay)"
    headers = ["scenario", "target", "size", "runs"]
    headers += [
        m.header.replace("fan-out", relay) if "notes" in modes else m.header for m in metrics
    ]
    body = []
    for row in group:
        cells = [row.scenario, TARGET_NAMES.get(row.target, row.target), size_label(row)]
        cells.append(str(len(row.measures)))
        for m in metrics:
            if not row.measures:
                cells.append(NOT_MEASURED)
            elif not row.applies(m):
                cells.append("n/a")
            else:
                cells.append(cell(row.spread(m), m.digits))
        body.append(cells)
    out += md_table(headers, body)
    notes = []
    for row in group:
        for run, why in row.failures:
            size = "" if row.mode == "journey" else f" ({size_label(row)})"
            notes.append(f"{row.scenario}{size} in {run.name}: {why[:200]}")
        for measure in row.measures:
            notes += notes_of(measure)
    if any(len(r.measures) < 3 for r in group if r.measures):
        notes.append("rows of fewer than 3 runs show no run-to-run variance (issue 11 asks for 3)")
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return [*out, ""]


def notes_of(m: Measure) -> list[str]:
    """What a result says of itself that the table does not show."""
    r, out = m.r, []
    where = f"{m.scenario} in {m.run.name}"
    if r.get("mode") == "notes":
        checked, stored = r.get("notes_rooms_checked"), r.get("notes_rooms_stored")
        if checked is not None:
            out.append(f"{where}: stored notes match in {stored}/{checked} rooms")
        if r.get("late_wait_s") is not None:
            out.append(
                f"{where}: {r.get('relayed_late')} updates relayed late (within "
                f"{r['late_wait_s']} s after the drain), {r.get('lost_final')} never relayed; "
                "the relay percentiles include the late ones"
            )
    for key, what in (("connect_failures", "connect failures"), ("closed_early", "closed early")):
        if r.get(key):
            out.append(f"{where}: {r[key]} {what}")
    if r.get("server_log_problems"):
        out.append(f"{where}: {r['server_log_problems']} errors in the server log")
    if r.get("server_log_warnings"):
        out.append(f"{where}: {r['server_log_warnings']} warnings in the server log")
    return out


# ratios ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RatioMetric:
    label: str
    get: Callable[[Result], float | None]
    better: str  # "lower" or "higher": which side of 1 is ours doing better
    digits: int = 2


RATIOS_BY_MODE = {
    "rate": [
        RatioMetric("server CPU %", CPU.get, "lower"),
        RatioMetric("fan-out p99", P99.get, "lower"),
    ],
    "saturate": [
        RatioMetric("delivered/s", DELIVERED.get, "higher"),
        RatioMetric("CPU ms per message", cpu_ms_per_msg, "lower"),
        RatioMetric("fan-out p99", P99.get, "lower"),
    ],
    "idle": [RatioMetric("RSS per connection", PER_CONN.get, "lower")],
}


@dataclass
class RatioRow:
    ours: str
    theirs: str
    target: str
    size: str
    metric: RatioMetric
    per_run: list[tuple[str, float]] = field(default_factory=list)

    @property
    def spread(self) -> Spread | None:
        return spread(v for _, v in self.per_run)


def ours_for(run: Run, theirs: Result) -> Result | None:
    """Our result the peer (or bare) result ``theirs`` is compared with: the base scenario of
    its name, same file, same number of connections."""
    base = group_of(str(theirs.get("scenario") or ""))
    for r in run.results:
        if (
            measured(r)
            and str(r.get("scenario") or "").upper() == base
            and r.get("target") == "menteo"
            and r.get("connections") == theirs.get("connections")
        ):
            return r
    return None


def ratios(runs: Sequence[Run]) -> list[RatioRow]:
    """Ours / theirs for every peer or bare result beside ours in the same file."""
    found: dict[tuple[str, str, Any, bool, str], RatioRow] = {}
    for run in runs:
        for theirs in run.results:
            if theirs.get("target") not in PEERS or not measured(theirs):
                continue
            ours = ours_for(run, theirs)
            if ours is None:
                continue
            name = str(theirs["scenario"])
            conns = ours.get("connections") if isinstance(ours.get("connections"), int) else None
            size = size_text(str(ours.get("mode")), rooms_of(ours), conns, None, run.smoke)
            mode = "rate" if ours.get("mode") == "notes" else str(ours.get("mode"))
            for metric in RATIOS_BY_MODE.get(mode, []):
                a, b = metric.get(ours), metric.get(theirs)
                if a is None or not b:
                    continue
                key = (
                    str(ours["scenario"]),
                    name,
                    ours.get("connections"),
                    run.smoke,
                    metric.label,
                )
                row = found.setdefault(
                    key,
                    RatioRow(str(ours["scenario"]), name, str(theirs.get("target")), size, metric),
                )
                row.per_run.append((run.name, a / b))
    return sorted(
        found.values(),
        key=lambda x: (scenario_rank(x.ours), target_rank(x.target), x.theirs, x.size),
    )


def ratio_section(rows_: list[RatioRow]) -> list[str]:
    out = [
        "## Ratios: ours against the bare fan-out and the peers",
        "",
        "Each ratio is ours / theirs from one result file (the same run, the same machine "
        f"load); then the median and the min{DASH}max spread across runs.",
        "",
    ]
    if not rows_:
        return [*out, f"No peer or bare scenario beside ours in one run: {NOT_MEASURED}.", ""]
    body = []
    for x in rows_:
        s = x.spread
        assert s is not None
        d = x.metric.digits
        body.append(
            [
                f"{x.ours} / {x.theirs} ({TARGET_NAMES.get(x.target, x.target)})",
                x.size,
                x.metric.label,
                f"ours {x.metric.better}",
                ", ".join(fmt(v, d) for _, v in x.per_run),
                fmt(s.median, d),
                f"{fmt(s.lo, d)}{DASH}{fmt(s.hi, d)}",
            ]
        )
    headers = [
        "ours / theirs",
        "size",
        "figure",
        "better when",
        "per run",
        "median",
        f"min{DASH}max",
    ]
    return [*out, *md_table(headers, body), ""]


# the cost curve ----------------------------------------------------------------------------
def standard(m: Measure, soak_seconds: float = SOAK_SECONDS) -> bool:
    """A result that counts for the targets: measured, not smoke, at the scenario's full size
    (when the scenario is known), not a soak."""
    r = m.r
    if not measured(r) or m.run.smoke:
        return False
    full = FULL_ROOMS.get(m.scenario.upper())
    if full is not None and rooms_of(r) != full:
        return False
    secs = num(r.get("seconds"))
    return secs is None or secs < soak_seconds


def everything(runs: Sequence[Run]) -> list[Measure]:
    return [Measure(run, r) for run in runs for r in run.results]


@dataclass(frozen=True)
class CostPoint:
    run: str
    rooms: int
    cpu_pct: float | None
    delivered_per_s: float | None
    cpu_ms: float | None


def cost_points(runs: Sequence[Run], soak_seconds: float = SOAK_SECONDS) -> list[CostPoint]:
    """S2 (ours), measured and not smoke nor soak, at any number of rooms."""
    out = []
    for m in everything(runs):
        r = m.r
        if m.scenario.upper() != "S2" or not measured(r) or m.run.smoke:
            continue
        if not isinstance(r.get("rooms"), int) or (num(r.get("seconds")) or 0) >= soak_seconds:
            continue
        out.append(
            CostPoint(
                m.run.name,
                int(r["rooms"]),
                num(r.get("server_cpu_pct")),
                num(r.get("delivered_per_s")),
                cpu_ms_per_msg(r),
            )
        )
    return out


def cost_series(points: Sequence[CostPoint]) -> list[list[CostPoint]]:
    """A line per run: the k-th run (oldest first) at each number of rooms makes line k, as a
    loop over sizes repeated k times writes them."""
    by_rooms: dict[int, list[CostPoint]] = {}
    for p in points:
        if p.cpu_ms is not None:
            by_rooms.setdefault(p.rooms, []).append(p)
    lines: list[list[CostPoint]] = []
    for rooms in sorted(by_rooms):
        for k, p in enumerate(by_rooms[rooms]):
            if k == len(lines):
                lines.append([])
            lines[k].append(p)
    return lines


def cost_medians(points: Sequence[CostPoint]) -> dict[int, Spread]:
    out: dict[int, Spread] = {}
    for rooms in sorted({p.rooms for p in points}):
        s = spread(p.cpu_ms for p in points if p.rooms == rooms)
        if s is not None:
            out[rooms] = s
    return out


def cost_section(points: Sequence[CostPoint], chart: str | None) -> list[str]:
    out = [
        "## How cost grows: S2 at 250, 500, 1,000 and 2,000 rooms",
        "",
        f"Server CPU per delivered message = server CPU % / 100 {TIMES} 1000 / delivered/s (ms); "
        "it should stay flat as rooms grow.",
        "",
    ]
    body = []
    for rooms in sorted({*COST_ROOMS, *(p.rooms for p in points)}):
        at = [p for p in points if p.rooms == rooms]
        if not at:
            body.append([f"{rooms:,}", "0", *[NOT_MEASURED] * 4])
            continue
        body.append(
            [
                f"{rooms:,}",
                str(len(at)),
                cell(spread(p.cpu_pct for p in at)),
                cell(spread(p.delivered_per_s for p in at), 0),
                cell(spread(p.cpu_ms for p in at), 3),
                ", ".join(fmt(p.cpu_ms, 3) for p in at),
            ]
        )
    headers = ["rooms", "runs", "server CPU %", "delivered/s", "CPU ms / msg", "per run"]
    out += md_table(headers, body)
    if chart:
        out += ["", f"![S2: server CPU per delivered message against rooms]({chart})"]
    return [*out, ""]


# the soak ----------------------------------------------------------------------------------
def soak_results(runs: Sequence[Run], soak_seconds: float = SOAK_SECONDS) -> list[Measure]:
    return [
        m
        for m in everything(runs)
        if m.scenario.upper() == "S2"
        and measured(m.r)
        and not m.run.smoke
        and (num(m.r.get("seconds")) or 0) >= soak_seconds
    ]


@dataclass(frozen=True)
class Interval:
    t_s: float
    cpu_pct: float | None
    p99_ms: float | None


def intervals(r: Result) -> list[Interval]:
    """The soak's per-interval figures (``intervals``), when the generator records them."""
    out = []
    for i in r.get("intervals") or []:
        if isinstance(i, dict) and num(i.get("t_s")) is not None:
            p99 = pctl(i.get("fanout_ms"), "p99")
            if p99 is None:
                p99 = num(i.get("fanout_p99_ms"))
            out.append(Interval(float(i["t_s"]), num(i.get("server_cpu_pct")), p99))
    return out


def drift(values: Sequence[float | None]) -> float | None:
    """The largest later value / the first interval's (the first minute's)."""
    if not values or not values[0]:
        return None
    later = [v for v in values[1:] if v is not None]
    return max(later) / values[0] if later else None


def soak_section(
    soaks: Sequence[Measure], chart: str | None, soak_seconds: float = SOAK_SECONDS
) -> list[str]:
    length = f"{soak_seconds / 60:g} minutes" if soak_seconds % 60 == 0 else f"{soak_seconds:g} s"
    out = [f"## Soak: S2 for {length}", ""]
    if not soaks:
        return [*out, f"{NOT_MEASURED}: no S2 result of {soak_seconds:g} s or more.", ""]
    body = []
    for m in soaks:
        points = timeline(m.r)
        first = points[0] if points else None
        last = points[-1] if points else None
        body.append(
            [
                m.run.name,
                fmt(num(m.r.get("seconds")), 0),
                fmt(num(m.r.get("warmup_s")), 0),
                fmt(first[1]) if first else NOT_MEASURED,
                fmt(last[1]) if last else NOT_MEASURED,
                fmt(max(p[1] for p in points)) if points else NOT_MEASURED,
                fmt(rss_growth_pct(m.r)),
            ]
        )
    headers = [
        "run",
        "measured s",
        "warm-up s",
        "RSS after warm-up MiB",
        "RSS at the end MiB",
        "RSS max MiB",
        "growth %",
    ]
    out += md_table(headers, body)
    out += [
        "",
        "RSS after warm-up is the first sample of the measuring window (it opens after the "
        "warm-up); the growth is to the last sample.",
        "",
    ]
    for m in soaks:
        got = intervals(m.r)
        if not got:
            out += [
                f"CPU and fan-out p99 over time in {m.run.name}: {NOT_MEASURED} (the result "
                "has no `intervals`: per-minute server CPU % and fan-out p99).",
                "",
            ]
            continue
        out += [f"CPU and fan-out p99 over time in {m.run.name}:", ""]
        out += md_table(
            ["until s", "server CPU %", "fan-out p99 ms"],
            [[fmt(i.t_s, 0), fmt(i.cpu_pct), fmt(i.p99_ms)] for i in got],
        )
        out.append("")
    if chart:
        out += [f"![S2 soak: server RSS over time]({chart})"]
    return [*out, ""]


# targets -----------------------------------------------------------------------------------
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
}


@dataclass
class Check:
    """One issue-11 target: a figure per run, and whether the median meets it."""

    what: str
    op: str
    limit: float
    per_run: list[tuple[str, float]] = field(default_factory=list)
    digits: int = 1
    missing: str = ""  # why not measured (or, for the cost curve, which sizes are missing)
    per_size: bool = False  # one figure from the medians at each size (the cost curve)

    @property
    def median(self) -> float | None:
        s = spread(v for _, v in self.per_run)
        return None if s is None else s.median

    @property
    def met(self) -> bool | None:
        m = self.median
        return None if m is None else OPS[self.op](m, self.limit)

    @property
    def runs_met(self) -> int:
        return sum(1 for _, v in self.per_run if OPS[self.op](v, self.limit))


def single(
    runs: Sequence[Run],
    scenario: str,
    get: Callable[[Result], float | None],
    soak_seconds: float = SOAK_SECONDS,
) -> list[tuple[str, float]]:
    """``get`` of each full-size result of ``scenario``."""
    out = []
    for m in everything(runs):
        if m.scenario.upper() == scenario.upper() and standard(m, soak_seconds):
            v = get(m.r)
            if v is not None:
                out.append((m.run.name, v))
    return out


def paired(
    runs: Sequence[Run],
    ours: str,
    theirs: str,
    get: Callable[[Result], float | None],
    soak_seconds: float = SOAK_SECONDS,
) -> list[tuple[str, float]]:
    """``get(ours) / get(theirs)`` of full-size results of one file, per file."""
    out = []
    for run in runs:
        found: dict[str, float | None] = {}
        for r in run.results:
            name = str(r.get("scenario") or "").upper()
            if name in (ours.upper(), theirs.upper()) and name not in found:
                if standard(Measure(run, r), soak_seconds):
                    found[name] = get(r)
        a, b = found.get(ours.upper()), found.get(theirs.upper())
        if a is not None and b:
            out.append((run.name, a / b))
    return out


def why_missing(runs: Sequence[Run], *scenarios: str) -> str:
    """Why a target has no figure: the scenario is absent, failed or not at full size."""
    for name in scenarios:
        got = [m for m in everything(runs) if m.scenario.upper() == name.upper()]
        full = FULL_ROOMS.get(name.upper())
        if not got:
            return f"no {name} result"
        if not any(measured(m.r) for m in got):
            return f"{name} skipped or failed"
        if full is not None and not any(
            measured(m.r) and rooms_of(m.r) == full and not m.run.smoke for m in got
        ):
            sizes = sorted(
                {n for m in got if measured(m.r) and not m.run.smoke and (n := rooms_of(m.r))}
            )
            only = f"only at {', '.join(f'{n:,}' for n in sizes)}" if sizes else "only smoke runs"
            return f"{name} not measured at its full size, {full:,} rooms ({only})"
    return "no figure in the results"


def check(
    runs: Sequence[Run],
    scenarios: Sequence[str],
    what: str,
    op: str,
    limit: float,
    per_run: list[tuple[str, float]],
    digits: int = 1,
) -> Check:
    c = Check(what, op, limit, per_run, digits)
    if not per_run:
        c.missing = why_missing(runs, *scenarios)
    return c


def checks(runs: Sequence[Run], soak_seconds: float = SOAK_SECONDS) -> list[Check]:
    """Every issue-11 target, from the figures."""
    s = soak_seconds
    lost, dup, ack99 = _key("lost"), _key("dup"), _sub("ack_ms", "p99")
    s2, s3, s6 = ["S2"], ["S3"], ["S6"]
    out = [
        check(
            runs,
            ["S2", "S2-node"],
            "S2: server CPU ≤ Node.js Socket.IO's (S2 / S2-node, same run)",
            "<=",
            1.0,
            paired(runs, "S2", "S2-node", CPU.get, s),
            2,
        ),
        check(runs, s2, "S2: fan-out p99 ≤ 15 ms", "<=", 15, single(runs, "S2", P99.get, s)),
        check(runs, s2, "S2: ack p99 ≤ 25 ms", "<=", 25, single(runs, "S2", ack99, s)),
        check(runs, s2, "S2: 0 lost", "==", 0, single(runs, "S2", lost, s), 0),
        check(runs, s2, "S2: 0 duplicated", "==", 0, single(runs, "S2", dup, s), 0),
        check(
            runs,
            ["S4", "S4-bare"],
            f"S4: delivered/s ≥ 0.7 {TIMES} the bare fan-out's (S4 / S4-bare, same run)",
            ">=",
            0.7,
            paired(runs, "S4", "S4-bare", DELIVERED.get, s),
            2,
        ),
        check(
            runs,
            ["S4", "S4-peer"],
            f"S4: delivered/s ≥ 3 {TIMES} python-socketio's (S4 / S4-peer, same run)",
            ">=",
            3.0,
            paired(runs, "S4", "S4-peer", DELIVERED.get, s),
            2,
        ),
        check(
            runs,
            ["S5"],
            "S5: ≤ 30 KiB RSS per idle connection",
            "<=",
            30,
            single(runs, "S5", PER_CONN.get, s),
            2,
        ),
        check(
            runs,
            ["S5-deflate"],
            "S5-deflate: ≤ 30 KiB RSS per idle connection",
            "<=",
            30,
            single(runs, "S5-deflate", PER_CONN.get, s),
            2,
        ),
        check(runs, s3, "S3: 0 lost", "==", 0, single(runs, "S3", lost, s), 0),
        check(
            runs,
            ["S3", "S2"],
            f"S3: fan-out p99 ≤ 2 {TIMES} S2's (S3 / S2, same run)",
            "<=",
            2.0,
            paired(runs, "S3", "S2", P99.get, s),
            2,
        ),
        check(runs, s6, "S6: relay p99 ≤ 20 ms", "<=", 20, single(runs, "S6", P99.get, s)),
        check(runs, s6, "S6: 0 lost", "==", 0, single(runs, "S6", lost, s), 0),
        check(
            runs,
            s6,
            "S6: every room's stored notes match what was typed (rooms that do not)",
            "==",
            0,
            single(runs, "S6", notes_unmatched, s),
            0,
        ),
    ]
    out += soak_checks(runs, s)
    out.append(cost_check(cost_points(runs, s)))
    return out


def notes_unmatched(r: Result) -> float | None:
    checked, stored = num(r.get("notes_rooms_checked")), num(r.get("notes_rooms_stored"))
    return None if checked is None or stored is None else checked - stored


def soak_checks(runs: Sequence[Run], soak_seconds: float = SOAK_SECONDS) -> list[Check]:
    """RSS growth after warm-up; CPU and fan-out p99 of every later interval against the first
    (when the soak result records ``intervals``)."""
    soaks = soak_results(runs, soak_seconds)
    growth = Check(
        f"Soak: server RSS after warm-up grows < {SOAK_GROWTH_PCT:g} %", "<", SOAK_GROWTH_PCT
    )
    stays = f"stays within +{SOAK_DRIFT:.0%} of the first minute's (largest later / first)"
    cpu = Check(f"Soak: server CPU {stays}", "<=", 1 + SOAK_DRIFT, digits=2)
    p99 = Check(f"Soak: fan-out p99 {stays}", "<=", 1 + SOAK_DRIFT, digits=2)
    for m in soaks:
        g = rss_growth_pct(m.r)
        if g is not None:
            growth.per_run.append((m.run.name, g))
        got = intervals(m.r)
        for c, values in ((cpu, [i.cpu_pct for i in got]), (p99, [i.p99_ms for i in got])):
            d = drift(values)
            if d is not None:
                c.per_run.append((m.run.name, d))
    if not soaks:
        for c in (growth, cpu, p99):
            c.missing = f"no S2 result of {soak_seconds:g} s or more"
    else:
        if not growth.per_run:
            growth.missing = "the soak result has no RSS timeline"
        for c in (cpu, p99):
            if not c.per_run:
                c.missing = "the soak result has no per-interval figures (`intervals`)"
    return [growth, cpu, p99]


def cost_check(points: Sequence[CostPoint]) -> Check:
    """Flat: no size costs more per message than the smallest size does, by more than
    ``COST_FLAT`` (a cost that falls as rooms grow, as group commits fill, is flat or better)."""
    c = Check(
        f"Cost: S2's CPU per delivered message does not grow from 250 to 2,000 rooms "
        f"(largest median at any size / the median at the smallest size, ≤ {1 + COST_FLAT:g})",
        "<=",
        1 + COST_FLAT,
        digits=2,
        per_size=True,
    )
    medians = cost_medians(points)
    if len(medians) >= 2 and medians[min(medians)].median > 0:
        first = medians[min(medians)].median
        c.per_run.append(("medians by rooms", max(s.median for s in medians.values()) / first))
        absent = [r for r in COST_ROOMS if r not in medians]
        if absent:
            c.missing = f"not measured at {', '.join(f'{r:,}' for r in absent)} rooms"
    else:
        c.missing = "S2 measured at fewer than two numbers of rooms"
    return c


def targets_section(found: Sequence[Check]) -> list[str]:
    body = []
    for c in found:
        if c.met is None:
            body.append([c.what, NOT_MEASURED, "-", c.missing or NOT_MEASURED])
            continue
        verdict = "met" if c.met else "**not met**"
        values = ", ".join(fmt(v, c.digits) for _, v in c.per_run)
        if c.per_size:
            detail = c.missing or "all four sizes measured"
        else:
            detail = f"{c.runs_met} of {len(c.per_run)} runs meet it; per run: {values}"
        body.append([c.what, fmt(c.median, c.digits), verdict, detail])
    return [
        "## Targets (issue 11)",
        "",
        "The median across runs of each figure against its target; ratios are taken within "
        "one result file. Only full-size runs count (not smoke, not the soak): "
        + ", ".join(f"{n} at {FULL_ROOMS[n]:,} rooms" for n in FULL_SIZES if n in FULL_ROOMS)
        + ".",
        "",
        *md_table(["target", "median", "verdict", "runs"], body),
        "",
    ]


# the header --------------------------------------------------------------------------------
def when(stamp: str) -> str:
    """``20261202-142956`` (bench.run) or an ISO time, readable."""
    for form in ("%Y%m%d-%H%M%S", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.datetime.strptime(stamp, form).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            continue
    return stamp or NOT_MEASURED


def commit_label(run: Run) -> str:
    if run.commit is None:
        return "not recorded"
    label = f"`{run.commit[:12]}`"
    if run.dirty:
        label += " + uncommitted changes"
    if run.commit_from == "--commit":
        label += " (from --commit)"
    elif run.commit_from == "J1":
        label += " (J1's record)"
    return label


def runs_section(runs: Sequence[Run], problems: Sequence[str]) -> list[str]:
    body = []
    for run in runs:
        ok = [str(r.get("scenario")) for r in run.results if measured(r)]
        bad = [str(r.get("scenario")) for r in run.results if not measured(r)]
        load_ = (run.data.get("machine") or {}).get("loadavg_at_start")
        load_text = fmt(num(load_[0]), 2) if isinstance(load_, list) and load_ else "-"
        body.append(
            [
                run.name + (" (smoke)" if run.smoke else ""),
                when(run.started),
                commit_label(run),
                f"`{run.data.get('command') or '?'}`",
                ", ".join(ok) or "-",
                ", ".join(bad) or "-",
                load_text,
            ]
        )
    headers = [
        "file",
        "started",
        "commit",
        "command",
        "measured",
        "skipped or failed",
        "load avg at start",
    ]
    out = ["## Runs", "", *md_table(headers, body)]
    commits = sorted({r.commit for r in runs if r.commit})
    out += ["", "Commit(s): " + (", ".join(f"`{c}`" for c in commits) or "not recorded") + "."]
    if problems:
        out += ["", "Files left out:", "", *(f"- {p}" for p in problems)]
    return [*out, ""]


def machine_text(m: dict[str, Any]) -> str:
    parts = []
    if m.get("cpus"):
        parts.append(f"{m['cpus']} CPUs" + (f" ({m['cpu_model']})" if m.get("cpu_model") else ""))
    if m.get("mem_mib"):
        parts.append(f"{m['mem_mib']:,} MiB RAM")
    if m.get("kernel"):
        parts.append(f"Linux {m['kernel']}")
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    packages = m.get("packages") or {}
    if packages:
        parts.append(", ".join(f"{k} {v}" for k, v in sorted(packages.items())))
    return "; ".join(parts) or NOT_MEASURED


def machine_section(runs: Sequence[Run]) -> list[str]:
    found: dict[str, list[str]] = {}
    for run in runs:
        m = run.data.get("machine")
        text = machine_text(m) if isinstance(m, dict) else NOT_MEASURED
        found.setdefault(text, []).append(run.name)
    out = ["## Machine", ""]
    for text, names in found.items():
        which = "" if len(found) == 1 else f" ({', '.join(names)})"
        out.append(f"- {text}{which}")
    loops = sorted(
        {str(r.data.get("generator_loop")) for r in runs if r.data.get("generator_loop")}
    )
    if loops:
        out.append(f"- load generator on {', '.join(loops)}, in one process beside the servers")
    peers: dict[str, str] = {}
    for m_ in everything(runs):
        for k, v in (m_.r.get("peer_versions") or {}).items():
            peers[str(k)] = str(v)
    if peers:
        out.append("- Node.js peer: " + ", ".join(f"{k} {v}" for k, v in sorted(peers.items())))
    notes = sorted({str(r.data.get("note")) for r in runs if r.data.get("note")})
    out += [f"- {n}" for n in notes]
    return [*out, ""]


# charts ------------------------------------------------------------------------------------
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#555")


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    guide: float | None = None  # a dashed horizontal line in the series' colour (a limit)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round numbers covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    k = 0
    while True:
        t = round(first + k * step, 10)
        ticks.append(t)
        if t >= hi:
            return ticks
        k += 1


def tick_text(v: float, ticks: Sequence[float]) -> str:
    """A tick's number with as many decimals as the step between ticks needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = f"{step:.6f}".rstrip("0").partition(".")[2]
    return f"{v:,.{len(decimals)}f}"


def svg_chart(
    title: str,
    x_label: str,
    y_label: str,
    series: Sequence[Series],
    *,
    y_from_zero: bool = True,
    x_span: tuple[float, float] | None = None,
    guide_label: str = "",
    width: int = 560,
    height: int = 360,
) -> str:
    """A line chart: axes with ticks and labels, a polyline and points per series, a legend."""
    left, right, top, bottom = 64, 170, 36, 52
    xs = [x for s in series for x, _ in s.points] + list(x_span or ())
    ys = [y for s in series for _, y in s.points] + [s.guide for s in series if s.guide]
    x_ticks = nice_ticks(min(xs), max(xs)) if xs else [0.0, 1.0]
    lo = 0.0 if y_from_zero else min(ys) - 0.05 * (max(ys) - min(ys) or max(ys) or 1)
    y_ticks = nice_ticks(lo, max(ys) if ys else 1.0)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return round(left + (x - x0) / ((x1 - x0) or 1) * pw, 1)

    def py(y: float) -> float:
        return round(top + ph - (y - y0) / ((y1 - y0) or 1) * ph, 1)

    e = escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + pw / 2}" y="20" text-anchor="middle" font-size="14" '
        f'font-weight="bold">{e(title)}</text>',
    ]
    for t in x_ticks:
        out.append(
            f'<line x1="{px(t)}" y1="{top}" x2="{px(t)}" y2="{top + ph}" stroke="#eee"/>'
            f'<line x1="{px(t)}" y1="{top + ph}" x2="{px(t)}" y2="{top + ph + 5}" stroke="#333"/>'
            f'<text x="{px(t)}" y="{top + ph + 18}" text-anchor="middle">'
            f"{tick_text(t, x_ticks)}</text>"
        )
    for t in y_ticks:
        out.append(
            f'<line x1="{left}" y1="{py(t)}" x2="{left + pw}" y2="{py(t)}" stroke="#eee"/>'
            f'<line x1="{left - 5}" y1="{py(t)}" x2="{left}" y2="{py(t)}" stroke="#333"/>'
            f'<text x="{left - 8}" y="{py(t) + 4}" text-anchor="end">'
            f"{tick_text(t, y_ticks)}</text>"
        )
    out += [
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>',
        f'<text x="{left + pw / 2}" y="{height - 12}" text-anchor="middle">{e(x_label)}</text>',
        f'<text x="16" y="{top + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + ph / 2})">{e(y_label)}</text>',
    ]
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        if s.guide is not None:
            out.append(
                f'<line class="guide" x1="{left}" y1="{py(s.guide)}" x2="{left + pw}" '
                f'y2="{py(s.guide)}" stroke="{colour}" stroke-dasharray="5,4" opacity="0.7"/>'
            )
        pts = " ".join(f"{px(x)},{py(y)}" for x, y in s.points)
        out.append(
            f'<polyline class="run" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{pts}"><title>{e(s.label)}</title></polyline>'
        )
        for x, y in s.points:
            out.append(
                f'<circle cx="{px(x)}" cy="{py(y)}" r="3" fill="{colour}">'
                f"<title>{e(s.label)}: {x:g}, {y:g}</title></circle>"
            )
        ly = top + 10 + 18 * i
        lx = left + pw + 14
        out.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 18}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="2"/><text x="{lx + 24}" y="{ly + 4}">{e(short(s.label))}</text>'
        )
    if guide_label:
        ly = top + 10 + 18 * len(series)
        out.append(
            f'<line x1="{left + pw + 14}" y1="{ly}" x2="{left + pw + 32}" y2="{ly}" '
            f'stroke="#666" stroke-dasharray="5,4"/>'
            f'<text x="{left + pw + 38}" y="{ly + 4}">{e(guide_label)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def short(label: str, most: int = 24) -> str:
    label = label.removesuffix(".json").removeprefix("bench-")
    return label if len(label) <= most else label[: most - 1] + "…"


def cost_chart(points: Sequence[CostPoint]) -> str | None:
    lines = cost_series(points)
    if not lines:
        return None
    series = []
    for k, line in enumerate(lines, 1):
        files = sorted({p.run for p in line})
        label = f"run {k}: " + (short(files[0]) if len(files) == 1 else f"{len(files)} files")
        series.append(Series(label, [(p.rooms, p.cpu_ms) for p in line if p.cpu_ms is not None]))
    return svg_chart(
        "S2: server CPU per delivered message",
        "rooms (2 connections each)",
        "server CPU ms per delivered message",
        series,
        x_span=(0, max(COST_ROOMS)),
    )


def soak_chart(soaks: Sequence[Measure]) -> str | None:
    got = [(m, timeline(m.r)) for m in soaks]
    got = [(m, t) for m, t in got if t]
    if not got:
        return None
    minutes = max(t[-1][0] for _, t in got) > 120
    scale = 60.0 if minutes else 1.0
    limit = 1 + SOAK_GROWTH_PCT / 100  # of the RSS after warm-up: the first sample
    series = [
        Series(m.run.name, [(x / scale, y) for x, y in t], guide=t[0][1] * limit) for m, t in got
    ]
    return svg_chart(
        "S2 soak: server RSS",
        "minutes into the measuring window" if minutes else "seconds into the measuring window",
        "server RSS (MiB)",
        series,
        y_from_zero=False,
        guide_label=f"+{SOAK_GROWTH_PCT:g} % of the first",
    )


# the document ------------------------------------------------------------------------------
@dataclass
class Report:
    markdown: str
    charts: dict[str, str]  # file name -> SVG text
    checks: list[Check]
    ratios: list[RatioRow]
    cost: list[CostPoint]


def build(
    runs: Sequence[Run],
    problems: Sequence[str] = (),
    *,
    command: str = "python -m bench.report",
    sources: Sequence[str] = (),
    chart_link: str | None = "bench",
    soak_seconds: float = SOAK_SECONDS,
) -> Report:
    """The document and its charts; ``chart_link`` is the charts' folder as the document links
    it (None: no charts)."""
    points = cost_points(runs, soak_seconds)
    soaks = soak_results(runs, soak_seconds)
    charts: dict[str, str] = {}
    cost_svg = cost_chart(points) if chart_link is not None else None
    soak_svg = soak_chart(soaks) if chart_link is not None else None
    if cost_svg:
        charts["cost.svg"] = cost_svg
    if soak_svg:
        charts["soak.svg"] = soak_svg

    def link(name: str) -> str | None:
        return f"{chart_link}/{name}" if name in charts else None

    found = checks(runs, soak_seconds)
    ratio_rows = ratios(runs)
    started = sorted(when(r.started) for r in runs if r.started)
    out = [
        f"_Generated by `{command}` from {len(sources)} result file(s) (under Runs); "
        "do not edit by hand: run the benchmark, then this command, again._",
        "",
        "# Benchmark results",
        "",
        f"{len(runs)} result file(s)"
        + (f", run from {started[0]} to {started[-1]}." if started else "."),
        "",
    ]
    out += runs_section(runs, problems)
    out += machine_section(runs)
    out += targets_section(found)
    out += [
        "## Scenarios",
        "",
        f"Each cell: the median across runs (min{DASH}max over the runs).",
        "",
    ]
    groups = rows(runs)
    for name, group in groups.items():
        out += group_section(name, group)
    if not groups:
        out += [f"No scenario results: {NOT_MEASURED}.", ""]
    out += ratio_section(ratio_rows)
    out += cost_section(points, link("cost.svg"))
    out += soak_section(soaks, link("soak.svg"), soak_seconds)
    text = "\n".join(out).rstrip() + "\n"
    return Report(text, charts, found, ratio_rows, points)


def rel(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` when it is under it, else absolute."""
    path, start = path.resolve(), start.resolve()
    return path.relative_to(start).as_posix() if path.is_relative_to(start) else path.as_posix()


def link_to(path: Path, start: Path) -> str:
    """A link from a document in ``start`` to ``path`` (with ../ when needed)."""
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("files", nargs="+", type=Path, help="bench.run result files (JSON)")
    ap.add_argument("--out", type=Path, help="the Markdown file (default: stdout)")
    ap.add_argument(
        "--charts",
        type=Path,
        help="folder for cost.svg and soak.svg (default: bench/ beside --out; none on stdout)",
    )
    ap.add_argument("--commit", help="the commit measured, for files that do not record it")
    ap.add_argument(
        "--soak-seconds",
        type=float,
        default=SOAK_SECONDS,
        help=f"an S2 result measured this long is the soak (default {SOAK_SECONDS:g})",
    )
    args = ap.parse_args(argv)
    runs, problems = load(args.files, args.commit)
    for p in problems:
        print(f"bench.report: {p}", file=sys.stderr)
    cwd = Path.cwd()
    charts_dir: Path | None = args.charts
    if charts_dir is None and args.out is not None:
        charts_dir = args.out.parent / "bench"
    doc_dir = args.out.parent if args.out is not None else cwd
    parts = ["python -m bench.report", *(rel(f, cwd) for f in args.files)]
    if args.out is not None:
        parts += ["--out", rel(args.out, cwd)]
    if args.charts is not None:
        parts += ["--charts", rel(args.charts, cwd)]
    if args.commit:
        parts += ["--commit", args.commit]
    if args.soak_seconds != SOAK_SECONDS:
        parts += ["--soak-seconds", f"{args.soak_seconds:g}"]
    report = build(
        runs,
        problems,
        command=" ".join(parts),
        sources=[rel(f, cwd) for f in args.files],
        chart_link=link_to(charts_dir, doc_dir) if charts_dir is not None else None,
        soak_seconds=args.soak_seconds,
    )
    if charts_dir is not None and report.charts:
        charts_dir.mkdir(parents=True, exist_ok=True)
        for name, svg in report.charts.items():
            (charts_dir / name).write_text(svg)
    if args.out is None:
        sys.stdout.write(report.markdown)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report.markdown)
        print(f"bench.report: wrote {args.out}", file=sys.stderr)
    if charts_dir is not None:
        for name in report.charts:
            print(f"bench.report: wrote {charts_dir / name}", file=sys.stderr)
    return 0 if runs else 1


if __name__ == "__main__":
    sys.exit(main())
