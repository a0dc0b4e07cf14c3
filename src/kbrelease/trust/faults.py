"""Fault injection for tests: die with SIGKILL at a named step boundary.

TEST ONLY. ``KBRELEASE_FAULT=after:gc.mark`` makes the process kill itself
(``kill -9``, no cleanup, no ``finally``) when it reaches
``point("after:gc.mark")``; several names may be given, comma-separated. The
fault-injection tests (tests/trust/test_faults.py) run the CLI in a subprocess
with this variable, then check that the next command repairs what was left.
Unset (always, in production) a point is one dictionary lookup.

Points: ``after:build.begin``, ``after:build.source``, ``after:publish.build``,
``after:publish.verify``, ``after:switch.pointer``, ``after:gc.mark``,
``after:gc.drop``, ``after:import.lock``, ``after:lock.acquired``.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "KBRELEASE_FAULT"


def point(name: str) -> None:
    """Kill this process with SIGKILL if ``KBRELEASE_FAULT`` names ``name``."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted and name in {w.strip() for w in wanted.split(",")}:
        os.kill(os.getpid(), signal.SIGKILL)
