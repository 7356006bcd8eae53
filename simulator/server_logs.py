"""The in-process servers' log lines go to a file in the report folder, not over the console.

``callsim demo`` (and ``callsim check`` without ``--mock-url``) run the mock OpenAI server — and,
for the demo, our bridge — in the harness's own process. On the console their log lines would
mislead: a scenario that injects a fault on purpose (``openai_drops``) makes the bridge log
``ERROR … OpenAI session failed`` during a run that passed, which over the progress bar reads
like a failure. The run's verdicts are the table; what the servers logged is evidence to look at when
something is off. So for the run, the servers' loggers write (at INFO, with the call ids they
carry) to ``servers.log`` beside the reports and stop propagating to the console, and the console
gets one line: how many warnings and errors they logged, and where.

The harness never imports the bridge (design rule 1): it knows only the logger names, which are
part of how any process says where its lines come from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Loggers of the servers the harness may run in-process: our bridge (and its HTTP stack) and the mock.
SERVER_LOGGERS = ("callsim.bridge", "callsim.mock", "hypercorn.error", "hypercorn.access", "quart.app")
LOG_NAME = "servers.log"


class ServerLogCounts(logging.Handler):
    """Counts the records at WARNING and above, by level name; knows the file they went to."""

    def __init__(self, path: Path) -> None:
        super().__init__(level=logging.WARNING)
        self.path = path
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] = self.counts.get(record.levelname, 0) + 1

    @property
    def warnings(self) -> int:
        return self.counts.get("WARNING", 0)

    @property
    def errors(self) -> int:
        return sum(n for level, n in self.counts.items() if level != "WARNING")

    def summary(self, servers: str = "bridge/mock") -> str:
        """The console's one line about the logs of the ``servers`` that ran in this process."""
        return (f"in-process {servers} logged {self.warnings} warning(s) and {self.errors} error(s): "
                f"{self.path}")


@contextmanager
def server_logs_to(report_dir: Path) -> Iterator[ServerLogCounts]:
    """While the block runs, the servers' loggers write to ``report_dir/servers.log`` only."""
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / LOG_NAME
    file_handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    counts = ServerLogCounts(path)
    saved: list[tuple[logging.Logger, bool, int]] = []
    for name in SERVER_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.propagate, lg.level))
        lg.addHandler(file_handler)
        lg.addHandler(counts)
        lg.propagate = False
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield counts
    finally:
        for lg, propagate, level in saved:
            lg.removeHandler(file_handler)
            lg.removeHandler(counts)
            lg.propagate = propagate
            lg.setLevel(level)
        file_handler.close()
