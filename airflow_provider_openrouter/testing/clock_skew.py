"""Clock skew for a test's child processes: ``time.time()`` and ``time.time_ns()`` shifted by some seconds.

Tasks on different machines disagree about the time; a test gives each task process its own error::

    env = {**os.environ, **clock_skew.child_env(-2.5)}  # this child's clock runs 2.5 s behind
    subprocess.run([sys.executable, ...], env=env)

:func:`child_env` puts ``clock_skew_site`` first on ``PYTHONPATH`` and sets :data:`ENV`: its
``sitecustomize`` calls :func:`install` when the interpreter starts, before anything imports ``time.time``
(a default argument such as ``clock=time.time`` binds the function when its module is imported). A forked
child, whose modules are already imported, can call :func:`install` itself, which reaches only the code that
looks ``time.time`` up when it runs.

``datetime.datetime.now()`` reads the system clock in C and is not shifted; neither are ``time.monotonic()``
and ``time.perf_counter()``, which measure intervals. Only tests set :data:`ENV`.

Standard library only, and loadable on its own (``sitecustomize`` loads it from its file, not through the
package, so that starting the interpreter does not import the provider).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final

#: The variable that activates the shim in a child that has ``clock_skew_site`` on its ``PYTHONPATH``.
ENV: Final = "OPENROUTER_TEST_CLOCK_SKEW_SECONDS"

_real_time = time.time
_real_time_ns = time.time_ns


def install(seconds: float) -> None:
    """Shift ``time.time()`` and ``time.time_ns()`` of this process by ``seconds`` (replacing any shift)."""
    shift = float(seconds)
    shift_ns = round(shift * 1_000_000_000)

    def skewed_time() -> float:
        return _real_time() + shift

    def skewed_time_ns() -> int:
        return _real_time_ns() + shift_ns

    time.time = skewed_time
    time.time_ns = skewed_time_ns


def uninstall() -> None:
    """Give this process its true clock back."""
    time.time = _real_time
    time.time_ns = _real_time_ns


def site_dir() -> str:
    """The directory whose ``sitecustomize`` installs the skew that :data:`ENV` names."""
    return str(Path(__file__).with_name("clock_skew_site"))


def child_env(seconds: float, base: dict[str, str] | None = None) -> dict[str, str]:
    """The variables that give a child interpreter a clock ``seconds`` off: :data:`ENV` and ``PYTHONPATH``
    (``base``'s, else this process's, with the shim's directory first)."""
    source = os.environ if base is None else base
    path = source.get("PYTHONPATH", "")
    return {ENV: repr(float(seconds)), "PYTHONPATH": site_dir() + (os.pathsep + path if path else "")}
