"""bench-node --busy: CPU burners start, burn, and never outlive the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vit_perception.cpu_load import CpuBurners


def _alive(pid: int) -> bool:
    """Running (a zombie, which a container's init may never reap, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(p) for p in pids)


def test_burners_burn_and_stop():
    with CpuBurners(2) as burners:
        pids = burners.pids
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        time.sleep(0.5)
        assert all(_cpu_ticks(p) > 0 for p in pids)  # busy, not sleeping
    assert not any(_alive(p) for p in pids) and burners.procs == []
    with CpuBurners(0) as none:
        assert none.pids == []
    with pytest.raises(ValueError, match="0 or more"):
        CpuBurners(-1)


def test_burners_stop_on_ctrl_c():
    with pytest.raises(KeyboardInterrupt), CpuBurners(1) as burners:
        pids = burners.pids
        raise KeyboardInterrupt
    assert not any(_alive(p) for p in pids)


def test_burners_end_when_their_parent_is_killed():
    """SIGKILL skips every finally: the burners notice their parent is gone and end."""
    code = ("import os, signal; from vit_perception.cpu_load import CpuBurners; "
            "b = CpuBurners(2).start(); print(*b.pids, flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout
    pids = [int(p) for p in out.split()]
    assert len(pids) == 2
    assert _gone_within(pids, 10.0)


def test_bench_node_busy_records_and_stops_its_burners(tmp_path, capsys):
    """The real command over DDS, briefly: the JSON names the burners, none survives."""
    from ros_support.processes import require_ros

    require_ros()
    from vit_perception.cli import main

    out = tmp_path / "node.json"
    assert main(["bench-node", "--busy", "1", "--duration", "2", "--rate", "5", "--size",
                 "160x120", "--no-transport", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    busy = figures["busy"]
    assert busy["processes"] == 1 and len(busy["pids"]) == 1 and busy["stopped"] is True
    assert not _alive(busy["pids"][0])
    assert figures["frames_sent"] == 10 and figures["omp_wait_policy"]
    assert "CPU-burning" in capsys.readouterr().out
