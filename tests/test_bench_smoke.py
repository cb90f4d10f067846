"""The benchmark harness works: its smoke mode drives a real server and accounts for every chat.

No speed thresholds: only that S1 (fixed rate) and S4 (saturating) run at a tiny size, report
a non-empty table, and that every chat was acked and reached the other member exactly once; the
same of S2-node, the Node.js Socket.IO peer driven by its own generator (bench/peers/node); and
of S6, the notes path: every notes update relayed to the other member exactly once, and every
room's stored notes equal to what both members typed; and of J1, the journey at size (issue 9),
which had stopped working unnoticed once joins were limited.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import ROOT, require_service, service_missing


def smoke(tmp_path: Path, scenarios: str, seconds: str, timeout: float) -> tuple[Any, str]:
    """``bench.run --smoke`` of ``scenarios``: its JSON report and what it printed."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "bench.run", "--smoke", "--scenarios", scenarios),
            *("--seconds", seconds, "--out", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_bench_smoke_s1_s4(tmp_path: Path) -> None:
    report, stdout = smoke(tmp_path, "S1,S4", "1.5", 90)
    results = {r["scenario"]: r for r in report["results"]}
    assert sorted(results) == ["S1", "S4"]
    for name, r in results.items():
        assert "error" not in r and "skipped" not in r, r
        assert r["connected"] == r["connections"] == 10, r
        assert r["sent"] > 0, r
        assert r["lost"] == 0 and r["dup"] == 0 and r["unacked"] == 0, r
        assert r["delivered"] == r["acked"] == r["sent"], r
        assert r["echo_missing"] == 0, r
        assert r["fanout_ms"]["n"] > 0 and r["ack_ms"]["n"] > 0, r
        assert r["closed_early"] == 0 and r["servers_alive"], r
        assert r["server_log_problems"] == 0, (name, r)
    assert results["S4"]["mode"] == "saturate" and results["S1"]["mode"] == "rate"
    table = report["table"].splitlines()
    assert table[0].split()[0] == "scenario" and len(table) == 4, report["table"]
    assert [line.split()[0] for line in table[2:]] == ["S1", "S4"]
    assert report["table"] in stdout


@pytest.mark.timeout(420)  # the first run on a fresh clone does `npm ci` in bench/peers/node
def test_bench_smoke_node(tmp_path: Path) -> None:
    missing = [b for b in ("node", "npm") if shutil.which(b) is None]
    if missing:
        service_missing(f"{' and '.join(missing)} not installed: S2-node needs Node.js and npm")
    redis = urlsplit(os.environ.get("MENTEO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    require_service("Redis", redis.hostname or "127.0.0.1", redis.port or 6379)
    report, _ = smoke(tmp_path, "S2-node", "2", 400)
    (r,) = report["results"]
    assert r["scenario"] == "S2-node" and r["target"] == "node", r
    assert "error" not in r and "skipped" not in r, r
    assert r["connected"] == r["connections"] == 10, r
    assert r["sent"] > 0, r
    assert r["lost"] == 0 and r["dup"] == 0 and r["unacked"] == 0, r
    assert r["delivered"] == r["acked"] == r["sent"], r
    for key in ("p50", "p95", "p99", "max"):
        assert r["fanout_ms"][key] is not None and r["ack_ms"][key] is not None, r
    assert r["fanout_ms"]["n"] > 0 and r["ack_ms"]["n"] > 0, r
    assert r["server_cpu_pct"] is not None and r["server_rss_mib"] > 0, r
    assert r["closed_early"] == 0 and r["servers_alive"], r
    assert r["server_log_problems"] == 0, r


def test_bench_smoke_s6_notes(tmp_path: Path) -> None:
    report, stdout = smoke(tmp_path, "S6", "2", 90)
    (r,) = report["results"]
    assert r["scenario"] == "S6" and r["mode"] == "notes" and r["rate"] == 5.0, r
    assert "error" not in r and "skipped" not in r, r
    assert r["connected"] == r["connections"] == 10, r
    assert r["sent"] > 0 and r["errors"] == 0 and r["error_codes"] == {}, r
    assert r["lost"] == 0 and r["dup"] == 0 and r["unknown_relays"] == 0, r
    assert r["relayed"] == r["delivered"] == r["sent"], r
    assert r["script_exhausted"] == 0 and r["welcome_notes_not_empty"] == 0, r
    for key in ("p50", "p95", "p99", "max"):
        assert r["relay_ms"][key] is not None, r
    assert r["relay_ms"]["n"] > 0 and r["relay_ms"] == r["fanout_ms"], r
    # every room's stored notes hold every update of both members
    assert r["notes_rooms_checked"] == 5, r
    assert r["notes_rooms_stored"] == r["notes_rooms_converged"] == 5, r
    assert r["notes_rooms_unread"] == 0 and r["notes_mismatch_examples"] == [], r
    assert r["notes_chars_mean"] > 0, r
    assert r["server_cpu_pct"] is not None and r["server_rss_mib"] > 0, r
    assert r["gen_cpu_pct"] is not None, r
    assert r["closed_early"] == 0 and r["servers_alive"], r
    assert r["server_log_problems"] == 0, r
    table = report["table"].splitlines()
    assert len(table) == 3 and table[2].split()[0] == "S6", report["table"]
    assert "stored 5/5 rooms" in table[2], report["table"]
    assert report["table"] in stdout


def test_bench_smoke_j1_journey(tmp_path: Path) -> None:
    """J1 (issue 9) at a tiny size: it loads its own file through the store, then every search
    answers, every welcome carries the pair's open items, cold joins find the room dropped, and
    the room build's store calls are the ones the hub makes."""
    report, _ = smoke(tmp_path, "J1", "1", 120)
    (r,) = report["results"]
    assert r["scenario"] == "J1" and "error" not in r, r
    assert r["search_errors"] == 0 and r["search_ms"]["n"] == r["queries"] > 0, r
    assert r["welcome_items"] == [r["open_items"]], r
    assert r["welcome_warm_ms"]["n"] > 0 and r["welcome_cold_ms"]["n"] > 0, r
    assert r["welcome_cold_not_dropped"] == 0, r
    assert r["journey_sessions"] > 0 and r["journey_items"] > 0, r
    assert set(r["build_store_calls_direct_ms"]) == {"enter", "room_state", "total"}, r
    assert r["server_log_problems"] == 0 and r["servers_alive"], r
