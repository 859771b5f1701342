"""node_stats: rates with an injected clock, drops, latency, throttled logging."""

from __future__ import annotations

import pytest

from vit_perception.node_stats import LogOnce, NodeStats


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def test_rates_latency_and_summary():
    clock = FakeClock()
    stats = NodeStats(window_s=2.0, clock=clock)
    assert stats.input_rate() == 0.0 and stats.latency() == (0.0, 0.0)
    for i in range(61):  # 30 Hz in, every other frame processed
        clock.t = 100.0 + i / 30
        stats.on_input()
        if i % 2:
            stats.on_dropped()
        else:
            stats.on_processed(latency_s=0.010 + 0.001 * (i % 5))
    assert stats.input_rate() == pytest.approx(30.0, rel=1e-6)
    assert stats.processed_rate() == pytest.approx(15.0, rel=1e-6)
    median, worst = stats.latency()
    assert median == pytest.approx(0.012) and worst == pytest.approx(0.014)
    stats.on_error("truncated_data")
    stats.on_error("truncated_data")
    stats.on_error("unsupported_encoding")
    summary = stats.summary()
    assert all(isinstance(v, str) for v in summary.values())
    assert summary["frames_received"] == "61" and summary["frames_dropped"] == "30"
    assert summary["frames_processed"] == "31"
    assert summary["errors_truncated_data"] == "2" and summary["errors_total"] == "3"
    assert summary["input_rate_hz"] == "30.00" and summary["latency_max_ms"] == "14.0"
    # The stream stops: the rate decays and then reads zero once the window has passed.
    clock.t += 1.0
    assert 0 < stats.input_rate() < 30
    clock.t += 5.0
    assert stats.input_rate() == 0.0 and stats.processed_rate() == 0.0


def test_log_once_throttles_per_kind():
    clock = FakeClock(0.0)
    throttle = LogOnce(period_s=10.0, clock=clock)
    assert throttle.should_log("truncated_data")
    assert not throttle.should_log("truncated_data")
    assert throttle("step_mismatch")  # another kind is independent
    clock.t = 9.9
    assert not throttle.should_log("truncated_data")
    clock.t = 10.0
    assert throttle.should_log("truncated_data")
    assert throttle.suppressed("truncated_data") == 2


@pytest.mark.parametrize("hz", [0.3, 1.0, 30.0, 200.0])
def test_rate_is_right_at_any_speed(hz):
    """A 5 s window holds one event of a 0.3 Hz stream: the rate comes from the last events."""
    clock = FakeClock(0.0)
    stats = NodeStats(window_s=5.0, clock=clock)
    for i in range(12):
        clock.t = i / hz
        stats.on_input()
        stats.on_processed(0.01)
        for frac in (0.0, 0.5, 0.99):  # read at any moment between events
            clock.t = (i + frac) / hz
            if i >= 2:
                assert stats.input_rate() == pytest.approx(hz, rel=0.01), (i, frac)
                assert stats.processed_rate() == pytest.approx(hz, rel=0.01)
    clock.t = 11 / hz + 1.5 / hz  # a missed event: lower, not zero yet
    assert 0 < stats.input_rate() < hz
    clock.t = 11 / hz + max(5.0, 2 / hz) + 0.01  # stopped: zero
    assert stats.input_rate() == 0.0
