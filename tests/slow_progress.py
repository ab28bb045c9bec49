"""Progress lines for slow tests (a pytest plugin, registered by tests/conftest.py).

pytest prints a test's dot when it ends, so the offline audio tests (40-50 s each)
looked like a hang. A test still running after ``slow_test_after`` seconds (an ini
option, default 5) gets a line saying so, and a line with its outcome and duration
when it ends; fast tests keep their dots:

    tests/test_audio_call.py
      [slow] tests/test_audio_call.py::test_offline_voice_call still running after 5 s...
    .
      [slow] tests/test_audio_call.py::test_offline_voice_call passed in 41.2 s

Outcomes and exit codes are pytest's own; this only writes lines.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "slow_test_after",
        "seconds after which a running test gets a progress line (0: never)",
        default="5",
    )


@pytest.hookimpl(trylast=True)  # after the terminal reporter exists
def pytest_configure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    after = float(config.getini("slow_test_after"))
    if reporter is not None and after > 0:
        # output capture is off between tests (now), so fd 1 is the terminal: keep a copy
        # to write to while a test runs with its output captured
        terminal = os.dup(sys.stdout.fileno())
        plugin = SlowTestProgress(reporter, after, terminal)
        config.pluginmanager.register(plugin, "slow-test-progress")
        config.add_cleanup(lambda: os.close(terminal))


class SlowTestProgress:
    """Announces a test once it has run ``after`` seconds, then its duration.

    The announcement comes from a timer thread while the test's output is captured:
    it writes to ``terminal`` (a copy of the terminal's file descriptor), holding a lock
    that the main thread takes before pytest writes the test's result, so the two never
    interleave. The closing line is written through the reporter, between tests.
    """

    def __init__(self, reporter: pytest.TerminalReporter, after: float, terminal: int) -> None:
        self._reporter = reporter
        self._terminal = terminal
        self._after = after
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._nodeid = ""
        self._started = 0.0
        self._announced = False
        self._reported = False  # pytest is about to write (or has written) the result
        self._outcome = "passed"

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        with self._lock:
            self._nodeid = nodeid
            self._started = time.monotonic()
            self._announced = self._reported = False
            self._outcome = "passed"
        self._timer = threading.Timer(self._after, self._announce, args=(nodeid,))
        self._timer.daemon = True
        self._timer.start()

    def _announce(self, nodeid: str) -> None:
        with self._lock:
            if nodeid != self._nodeid or self._reported:
                return
            self._announced = True
            line = f"\n  [slow] {nodeid} still running after {self._after:g} s...\n"
            os.write(self._terminal, line.encode())

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # runs before the terminal reporter writes this phase's result
        if report.failed or report.skipped:
            self._outcome = "failed" if report.failed else "skipped"
        if report.when == "setup" and report.passed:
            return  # nothing is written for a passing setup; the call is what may be slow
        with self._lock:
            self._reported = True
        self._stop_timer()

    @pytest.hookimpl
    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self._stop_timer()
        elapsed = time.monotonic() - self._started
        if self._announced or elapsed >= self._after:
            if self._reporter.verbosity < 0:  # -q: the reporter does not track its lines
                self._reporter.write("\n")
            self._reporter.write_line(f"  [slow] {nodeid} {self._outcome} in {elapsed:.1f} s")
            self._reporter.flush()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
