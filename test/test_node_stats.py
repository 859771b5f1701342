"""node_stats: rates with an injected clock, drops, latency, throttled logging, the frame slot."""

from __future__ import annotations

import threading
import time

import pytest

from vit_perception.node_stats import LatestFrameSlot, LogOnce, NodeStats, SlotClosed


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


def test_slot_newest_wins_and_counts_drops():
    slot = LatestFrameSlot()
    assert slot.get(timeout=0.01) is None
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 replaced before it was taken
    assert slot.put(3) is True
    assert slot.get(timeout=0) == 3 and slot.dropped == 2
    assert not slot.pending() and slot.put(4) is False
    slot.close()
    assert slot.get() == 4  # a pending item survives close
    with pytest.raises(SlotClosed):
        slot.get()
    with pytest.raises(SlotClosed):
        slot.put(5)


def test_slot_close_wakes_a_blocked_get():
    slot = LatestFrameSlot()
    result = []

    def consumer():
        try:
            slot.get()
        except SlotClosed:
            result.append("closed")

    thread = threading.Thread(target=consumer)
    thread.start()
    time.sleep(0.05)
    slot.close()
    thread.join(timeout=2)
    assert result == ["closed"]


def test_slot_threads_lose_nothing_and_never_block_the_producer():
    """Every item is either taken or counted as dropped, exactly once, and in order."""
    slot = LatestFrameSlot()
    stats = NodeStats()
    taken = []
    n = 20000

    def consumer():
        while True:
            try:
                item = slot.get(timeout=1.0)
            except SlotClosed:
                return
            if item is not None:
                taken.append(item)
                time.sleep(0.0001 if item % 7 else 0)  # "inference" slower than input

    worker = threading.Thread(target=consumer)
    worker.start()
    for i in range(n):
        stats.on_input()
        if slot.put(i):
            stats.on_dropped()
    slot.close()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert len(taken) + slot.dropped == n and stats.dropped == slot.dropped
    assert taken == sorted(taken) and len(set(taken)) == len(taken)
    assert taken[-1] == n - 1  # the newest frame is always processed
    assert slot.dropped > 0


def test_put_returns_while_the_consumer_is_stuck_in_inference():
    """A stalled worker never stalls the subscription callback: puts keep returning and are
    counted as drops, and the newest frame is the one the worker takes next."""
    slot = LatestFrameSlot()
    stuck, release, taken = threading.Event(), threading.Event(), []

    def consumer():
        taken.append(slot.get(timeout=5))
        stuck.set()
        release.wait(timeout=10)  # "inference" that does not end until released
        taken.append(slot.get(timeout=5))

    worker = threading.Thread(target=consumer)
    worker.start()
    slot.put(0)
    assert stuck.wait(timeout=5)
    for i in range(1, 1001):
        slot.put(i)
    assert slot.dropped == 999 and worker.is_alive()
    release.set()
    worker.join(timeout=5)
    assert taken == [0, 1000]


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
