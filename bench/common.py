"""What every performance bench prints first: the machine, its load, the date and the commit.

The machines these benches run on are often shared, so the 1/5/15-minute load
average is taken at the start and at the end of each run and printed beside
the numbers: a run under load says so.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - no torch, no driver: no GPU
        return None


def machine() -> dict:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "gpu": gpu_name() or "none",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": commit(),
        "load_avg": load_average(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def print_machine(info: dict, extra: str = "") -> None:
    print(f"date {info['date']}  commit {info['commit']}  load avg (1/5/15 min) {info['load_avg']}")
    print(f"cpu {info['cpu']}  cores {info['cores']} (usable {info['usable_cores']})  gpu {info['gpu']}")
    print(f"{info['platform']}  python {info['python']}" + (f"  torch {info['torch']}" if "torch" in info else "") + (f"  {extra}" if extra else ""))


def percentile_ms(seconds: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(seconds, dtype=np.float64), q) * 1000) if len(seconds) else float("nan")


def timed_runs(fn, *, min_time_s: float, min_runs: int, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn()``: ``warmup`` untimed calls, then at least ``min_runs`` and ``min_time_s``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_time_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = "  ".join(str(h).rjust(w) if i else str(h).ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    out = [line, "-" * len(line)]
    for row in rows:
        out.append("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(out)


def print_tables(header: list[str], rows: list[list[str]], markdown: bool = False) -> None:
    """The table as text, and again as Markdown (for BENCHMARKS.md) when asked."""
    print(text_table(header, rows))
    if markdown:
        print()
        print(markdown_table(header, rows))


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in this process's environment for the block (stage processes inherit them), then restored."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
