"""Plain-Python bookkeeping for the perception node: rates, drops, latency, errors.

No rclpy here: the node feeds these with its own clock readings and logger, and publishes
`NodeStats.summary()` as diagnostic key/values.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable


class _RateWindow:
    """Events per second over the last `window_s` seconds, or over the last `min_events` events
    when those span longer: a 0.3 Hz stream reads 0.3 Hz, not 0 (a 5 s window holds one event).

    Between events the rate holds while the gap is within one mean interval, then decays as the
    gap grows, and reads 0 once no event came for `window_s` and two mean intervals.
    """

    def __init__(self, window_s: float, min_events: int = 5):
        self.window_s = window_s
        self.min_events = max(2, int(min_events))
        self._times: deque[float] = deque()

    def add(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        n = len(self._times)
        if n < 2:
            return 0.0
        first, last = self._times[0], self._times[-1]
        mean = max(last - first, 1e-9) / (n - 1)
        if now - last > max(self.window_s, 2 * mean):
            return 0.0
        # n events span n-1 intervals; a gap longer than one mean interval counts as time
        # without events, so a stopped stream decays instead of holding its last rate.
        return (n - 1) / max(last - first, now - first - mean, 1e-9)

    def _trim(self, now: float) -> None:
        while len(self._times) > self.min_events and self._times[0] < now - self.window_s:
            self._times.popleft()


class NodeStats:
    """Counters and windows a node reports on /diagnostics. Thread-safe.

    Call `on_input()` per frame received, `on_dropped()` per frame replaced before processing,
    `on_processed(latency_s)` per frame finished, `on_error(kind)` per bad frame. `clock` returns
    seconds (monotonic by default; tests inject their own).
    """

    def __init__(
        self,
        window_s: float = 5.0,
        latency_window: int = 300,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._clock = clock
        self._lock = threading.Lock()
        self._inputs = _RateWindow(window_s)
        self._processed = _RateWindow(window_s)
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.errors: Counter[str] = Counter()

    def on_input(self) -> None:
        with self._lock:
            self.received += 1
            self._inputs.add(self._clock())

    def on_dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped += count

    def on_processed(self, latency_s: float) -> None:
        with self._lock:
            self.processed += 1
            self._processed.add(self._clock())
            self._latencies.append(float(latency_s))

    def on_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def input_rate(self) -> float:
        with self._lock:
            return self._inputs.rate(self._clock())

    def processed_rate(self) -> float:
        with self._lock:
            return self._processed.rate(self._clock())

    def latency(self) -> tuple[float, float]:
        """(median, max) latency in seconds over the last frames; (0, 0) before any."""
        with self._lock:
            values = sorted(self._latencies)
        if not values:
            return 0.0, 0.0
        mid = len(values) // 2
        median = values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])
        return median, values[-1]

    def summary(self) -> dict[str, str]:
        """Diagnostic key/values (strings, as diagnostic_msgs/KeyValue wants)."""
        median, worst = self.latency()
        with self._lock:
            received, processed, dropped = self.received, self.processed, self.dropped
            errors = dict(self.errors)
        out = {
            "input_rate_hz": f"{self.input_rate():.2f}",
            "processed_rate_hz": f"{self.processed_rate():.2f}",
            "frames_received": str(received),
            "frames_processed": str(processed),
            "frames_dropped": str(dropped),
            "latency_median_ms": f"{median * 1e3:.1f}",
            "latency_max_ms": f"{worst * 1e3:.1f}",
            "errors_total": str(sum(errors.values())),
        }
        for kind in sorted(errors):
            out[f"errors_{kind}"] = str(errors[kind])
        return out


class LogOnce:
    """Throttle for per-kind log lines: the first occurrence of a kind logs, then at most once
    every `period_s` seconds per kind.

        if throttle.should_log(exc.kind):
            logger.warning(f"dropping frame: {exc}")
    """

    def __init__(self, period_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def should_log(self, kind: str) -> bool:
        """True if a line for `kind` should be logged now."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is None or now - last >= self.period_s:
                self._last[kind] = now
                return True
            self._suppressed[kind] += 1
            return False

    def suppressed(self, kind: str) -> int:
        """How many times `kind` was suppressed in total."""
        with self._lock:
            return self._suppressed[kind]

    __call__ = should_log
