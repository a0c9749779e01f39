# SPDX-License-Identifier: MIT
# What every Python test program shares: check() that says what passed, Failure, wait_until().
import time


class Failure(AssertionError):
    """A checked condition was false; the message says what should have held."""


def check(cond, what: str) -> None:
    """Fail with `what` unless `cond`; print "ok: what" otherwise (the log reads as a list of facts)."""
    if not cond:
        raise Failure(what)
    print("ok: " + what, flush=True)


def wait_until(cond, timeout: float, step: float = 0.02) -> bool:
    """Poll `cond` until it is true or `timeout` seconds have passed; return its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())
