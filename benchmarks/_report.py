"""Shared helpers of the benchmark scripts: tables, the docs section writer, machine info.

Importing this module puts the repository root first on ``sys.path`` so the
scripts measure this checkout of ``sparse_rec`` whether or not it is installed.
"""

import datetime
import os
import platform
import re
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DOCS = ROOT / "docs" / "benchmarks.md"
# Shared data sets live next to the repository (or in $SPARSE_REC_DATA, as for the
# tests) and are read in place, never copied.
DATA = Path(os.environ.get("SPARSE_REC_DATA") or ROOT.parent / "shared" / "data")
HEADER = "# Benchmarks\n\nFigures written by the scripts in `benchmarks/`; rerun them to refresh.\n"


def markdown_table(headers, rows):
    """A GitHub-flavoured markdown table; cells are converted with ``str``."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    width = [max(len(r[j]) for r in cells) for j in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) + " |"

    sep = "| " + " | ".join("-" * w for w in width) + " |"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def write_section(name, text, path=DOCS):
    """Replace the ``name`` section of ``docs/benchmarks.md``, or append it."""
    path = Path(path)
    doc = path.read_text() if path.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(doc):
        # A function replacement keeps backslashes in the text literal.
        doc = pattern.sub(lambda _: block, doc, count=1)
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
    return path


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module):
    try:
        return __import__(module).__version__
    except Exception:  # a missing optional package should not stop a report
        return "absent"


def machine_info():
    """One line describing the machine and the versions that produced a figure."""
    import numba

    return (
        f"{_cpu_model()}, {os.cpu_count()} cores, "
        f"{numba.config.NUMBA_NUM_THREADS} Numba threads; Python {platform.python_version()}, "
        f"numpy {_version('numpy')}, numba {numba.__version__}, "
        f"implicit {_version('implicit')}, sparse_rec {_version('sparse_rec')}; "
        f"{datetime.date.today().isoformat()}"
    )


def command_line():
    """How this script was run, for the section that records its output."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return "python " + " ".join(shlex.quote(a) for a in [str(script), *sys.argv[1:]])


def section_text(title, body):
    """Section heading, command and machine line, then the body."""
    return f"## {title}\n\nCommand: `{command_line()}`\n\nMachine: {machine_info()}\n\n{body}\n"


def median(values):
    values = sorted(values)
    n = len(values)
    if n == 0:
        return float("nan")
    mid = n // 2
    return values[mid] if n % 2 else 0.5 * (values[mid - 1] + values[mid])


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def skip(message):
    """Exit successfully with a note: missing optional data is not a failure."""
    print(f"skipped: {message}")
    sys.exit(0)


class ImplicitAdapter:
    """An implicit model's ``recommend(users, n, filter_seen)`` as ``evaluate`` calls it."""

    def __init__(self, model):
        self.model = model

    def recommend(self, users, n, filter_seen):
        # implicit wants a CSR with exactly one row per requested user.
        ids, scores = self.model.recommend(
            userid=np.asarray(users), user_items=filter_seen.tocsr(), N=n,
            filter_already_liked_items=True,
        )
        ids = np.array(ids, dtype=np.int64, ndmin=2)
        scores = np.array(scores, dtype=np.float32, ndmin=2)
        # implicit keeps filtered items in short lists, scored -FLT_MAX: mark them padding.
        ids[~(scores > np.finfo(np.float32).min)] = -1
        if ids.shape[1] < n:
            pad = n - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids, scores
