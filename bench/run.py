"""``python3 -m bench``: every scenario in one run, against services it starts and stops itself.

    python3 -m bench [--quick] [--out DIR] [--only SCENARIO ...]

Scenarios (bench/README.md explains each): held, flood, banner, throughput, mixed. ``--quick``
runs each smaller and shorter (under 3 minutes on 2 cores); the default is the full run (about 15
minutes). It needs root (sendmail runs in a private mount namespace) and sendmail installed (see
``sh scripts/test``). Results go to DIR (default /tmp/greetproxy-bench/<mode>-<time>):
results.json, results.md and PNG plots; the summary table is printed on stdout, a progress bar
drawn on stderr. Exit status 1 if a scenario failed to run (its error is in the results).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import IO

from bench import banner, flood, held, mixed, throughput
from bench.report import Result, figure, summary_table, write_report
from bench.services import Services
from bench.system import machine
from tests.support.sendmail import sendmail_available

SCENARIOS: dict[str, ModuleType] = {
    "held": held,
    "flood": flood,
    "banner": banner,
    "throughput": throughput,
    "mixed": mixed,
}


class Progress:
    """A progress bar on stderr. Each scenario comes with an estimate of its seconds; the bar is
    the share of the estimated total done (a scenario counts whole once it ends, and at most 95%
    of itself while it runs), the label is the step and the load generator's count."""

    WIDTH = 28

    def __init__(self, total: float, stream: IO[str] = sys.stderr) -> None:
        self.total = max(total, 1.0)
        self.stream = stream
        self.tty = stream.isatty()
        self.began = time.monotonic()
        self.done = 0.0  # estimated seconds of the scenarios finished
        self.current = 0.0  # the running scenario's estimate
        self.current_began = self.began
        self.label = ""
        self.detail = ""
        self._drawn = 0.0

    def begin(self, estimate: float) -> None:
        self.current, self.current_began = estimate, time.monotonic()

    def end(self) -> None:
        self.done += self.current
        self.current = 0.0

    def share(self) -> float:
        running = min(time.monotonic() - self.current_began, 0.95 * self.current) if self.current else 0.0
        return min((self.done + running) / self.total, 1.0)

    def step(self, label: str) -> None:
        self.label, self.detail = label, ""
        self.draw(force=True)

    def update(self, fraction: float, detail: str = "") -> None:
        self.detail = detail
        self.draw()

    def line(self) -> str:
        share = self.share()
        filled = round(share * self.WIDTH)
        elapsed = time.monotonic() - self.began
        bar = "#" * filled + "." * (self.WIDTH - filled)
        text = f"[{bar}] {share:4.0%} {elapsed // 60:.0f}:{elapsed % 60:02.0f}  {self.label}"
        return text + (f" ({self.detail})" if self.detail else "")

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < (0.2 if self.tty else 15.0):
            return
        self._drawn = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line()[: shutil.get_terminal_size().columns - 1])
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        prog="python3 -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parse.add_argument("--quick", action="store_true", help="small and short (under 3 minutes)")
    parse.add_argument(
        "--out", type=Path, help="folder for the results (default under /tmp/greetproxy-bench)"
    )
    parse.add_argument(
        "--only", nargs="+", choices=list(SCENARIOS), metavar="SCENARIO", help=", ".join(SCENARIOS)
    )
    return parse


def failed_result(name: str, error: BaseException) -> Result:
    return {
        "scenario": name,
        "title": SCENARIOS[name].TITLE,
        "figures": [
            figure("scenario failed to run", f"{type(error).__name__}: {str(error)[:300]}", met=False)
        ],
        "tables": [],
        "notes": [],
        "data": {"error": "".join(traceback.format_exception(error))},
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (each sendmail runs in a private mount namespace)", file=sys.stderr)
        return 1
    if not sendmail_available():
        print("bench: sendmail, m4 or makemap is missing; `sh scripts/test` installs them", file=sys.stderr)
        return 1
    mode = "quick" if args.quick else "full"
    names = args.only or list(SCENARIOS)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("/tmp/greetproxy-bench") / f"{mode}-{stamp}"
    chosen = {name: getattr(SCENARIOS[name], mode.upper()) for name in names}
    progress = Progress(sum(SCENARIOS[name].estimate(params) for name, params in chosen.items()))
    workdir = Path(tempfile.mkdtemp(prefix="greetproxy-bench-"))
    results: list[Result] = []
    began = time.monotonic()
    services = Services(workdir, progress)
    try:
        for name, params in chosen.items():
            progress.begin(SCENARIOS[name].estimate(params))
            started, load = time.monotonic(), os.getloadavg()[0]
            try:
                result = SCENARIOS[name].run(services, params)
            except Exception as error:  # the other scenarios still run; the error is reported
                result = failed_result(name, error)
            result["number"] = list(SCENARIOS).index(name) + 1
            result["seconds"] = round(time.monotonic() - started, 1)
            result["load"] = [round(load, 2), round(os.getloadavg()[0], 2)]
            results.append(result)
            progress.end()
    finally:
        progress.step("stopping")
        services.close()
        shutil.rmtree(workdir, ignore_errors=True)
        progress.close()
    header = {
        "mode": mode,
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "seconds": time.monotonic() - began,
        "command": "python3 -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "scenarios": names,
    }
    written = write_report(results, machine(), header, out)
    print(summary_table(results))
    print(
        f"{mode} run: {header['seconds']:.0f} s; results in {out}: "
        + ", ".join(path.name for path in written)
    )
    return 1 if any("error" in result["data"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
