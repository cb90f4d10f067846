"""The per-frame metrics, kept as plain numbers, render as Prometheus' own types would."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from server.metrics import PrometheusMetrics


def samples(m: PrometheusMetrics) -> dict[tuple[str, str | None], float]:
    out: dict[tuple[str, str | None], float] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, s.labels.get("le"))] = s.value
    return out


def test_counts_and_histograms_as_prometheus_renders_them() -> None:
    m = PrometheusMetrics("n1")
    for seconds in (0.0005, 0.001, 0.003, 0.2, 7.0):  # 0.001 is on a bound: le counts it
        m.ack_latency(seconds)
    for size in (1, 3, 7, 2000):
        m.commit_batch(size)
    m.frame_in()
    m.frame_in()
    m.frame_out(5)
    got = samples(m)
    assert got[("menteo_frames_in_total", None)] == 2
    assert got[("menteo_frames_out_total", None)] == 5
    ack = "menteo_ack_latency_seconds"
    assert got[(f"{ack}_bucket", "0.001")] == 2
    assert got[(f"{ack}_bucket", "0.0025")] == 2
    assert got[(f"{ack}_bucket", "0.005")] == 3
    assert got[(f"{ack}_bucket", "0.25")] == 4
    assert got[(f"{ack}_bucket", "5.0")] == 4
    assert got[(f"{ack}_bucket", "+Inf")] == 5
    assert got[(f"{ack}_count", None)] == 5
    assert abs(got[(f"{ack}_sum", None)] - 7.2045) < 1e-9
    batch = "menteo_commit_batch_size"
    assert got[(f"{batch}_bucket", "1.0")] == 1
    assert got[(f"{batch}_bucket", "5.0")] == 2
    assert got[(f"{batch}_bucket", "10.0")] == 3
    assert got[(f"{batch}_bucket", "1000.0")] == 3
    assert got[(f"{batch}_bucket", "+Inf")] == 4
    assert got[(f"{batch}_sum", None)] == 2011


def test_two_nodes_in_one_process_count_apart() -> None:
    a, b = PrometheusMetrics("a"), PrometheusMetrics("b")
    a.frame_in()
    assert samples(a)[("menteo_frames_in_total", None)] == 1
    assert samples(b)[("menteo_frames_in_total", None)] == 0
