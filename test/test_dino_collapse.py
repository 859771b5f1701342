"""dino/collapse.py: the monitor reports a collapse held in ``share`` of the last ``patience``
steps, so that a uniform teacher whose KL spikes now and then (seen with the cnn stem) is still
caught; share 1 keeps the old consecutive-steps rule; its state resumes exactly, and a state of
before the window loads."""

from __future__ import annotations

import math

from vit_perception.dino.collapse import CollapseMonitor

LOG_K = math.log(512)
UNIFORM = {"teacher_entropy": 0.999 * LOG_K, "batch_entropy": LOG_K, "log_k": LOG_K}
HEALTHY = {"teacher_entropy": 0.6 * LOG_K, "batch_entropy": 0.9 * LOG_K, "log_k": LOG_K}


def _kls(n: int, spike_every: int) -> list[float]:
    """A uniform teacher's KL, under the threshold except a spike every ``spike_every`` steps."""
    return [5e-3 if (i + 1) % spike_every == 0 else 3e-4 for i in range(n)]


def _first_report(monitor: CollapseMonitor, kls, stats=UNIFORM) -> int | None:
    for step, kl in enumerate(kls, 1):
        if monitor.update(step, {**stats, "kl": kl}):
            return step
    return None


def test_a_spiking_kl_breaks_every_streak_but_the_window_catches_it():
    kls = _kls(400, spike_every=20)  # 95% of steps under 1e-3, never 50 in a row
    assert _first_report(CollapseMonitor(patience=50, share=1.0), kls) is None
    step = _first_report(CollapseMonitor(patience=50), kls)  # default share 0.9
    assert step == 47  # the 45th collapsed step (spikes at 20 and 40): 45 of 50 needed
    message = CollapseMonitor(patience=50).update(1, {**UNIFORM, "kl": 0.0})
    assert message is None  # one collapsed step of 50 is not a collapse


def test_healthy_runs_and_the_warm_up_are_not_reported():
    assert _first_report(CollapseMonitor(patience=50), [1e-4] * 400, HEALTHY) is None
    late = CollapseMonitor(patience=50, after_steps=300)
    assert _first_report(late, [1e-4] * 400) == 344  # the 45th collapsed step from 300


def test_share_one_is_the_consecutive_rule_and_the_message_says_how_many():
    monitor = CollapseMonitor(patience=3, share=1.0)
    assert _first_report(monitor, [1e-4, 1e-4, 5e-3, 1e-4, 1e-4]) is None
    monitor = CollapseMonitor(patience=3)  # ceil(0.9 * 3) = 3: every step, as before
    kls = [1e-4, 1e-4, 5e-3, 1e-4, 1e-4, 1e-4]
    assert _first_report(monitor, kls) == 6
    message = monitor.update(7, {**UNIFORM, "kl": 1e-4})
    assert "uniform" in message and "3 of the last 3 steps" in message


def test_state_resumes_exactly_and_an_old_state_loads():
    kls = _kls(120, spike_every=20)
    whole = CollapseMonitor(patience=50)
    expected = _first_report(whole, kls)
    first, second = CollapseMonitor(patience=50), CollapseMonitor(patience=50)
    assert _first_report(first, kls[:30]) is None
    second.load_state_dict(first.state_dict())
    got = next(step for step, kl in enumerate(kls[30:], 31)
               if second.update(step, {**UNIFORM, "kl": kl}))
    assert got == expected
    old = CollapseMonitor(patience=50)
    old.load_state_dict({"count": 44, "kind": "the teacher's distribution is uniform"})
    assert _first_report(old, [1e-4] * 10) == 1  # 44 + 1 collapsed steps of the window: 45
