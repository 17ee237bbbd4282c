"""Retrying transient failures with exponential back-off, as a wrapper around any backend.

Only ``RemoteUnavailable`` is retried (connection refused or reset, timeouts, 5xx, throttling).
Everything else (missing key, no bucket, access denied, a lost compare-and-swap) is permanent
and surfaces at once. Retrying is safe for every call: ``put_new`` of an object that did land
before the connection dropped returns False (the bytes are the same), and callers of
``swap_ref`` re-read the ref when a retried swap reports ``RemoteMoved``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from store.backends.base import Backend, Wrapper
from store.errors import RemoteUnavailable


class RetryBackend(Wrapper):
    """Retry transient errors of ``inner`` up to ``attempts`` times, sleeping ``base_delay * 2**n`` (capped, jittered)."""

    def __init__(
        self,
        inner: Backend,
        *,
        attempts: int = 5,
        base_delay: float = 0.25,
        max_delay: float = 4.0,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str, int, RemoteUnavailable], None] | None = None,
    ) -> None:
        super().__init__(inner)
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.on_retry = on_retry
        self.retries = 0

    def _call(self, name: str, *args):
        for attempt in range(1, self.attempts + 1):
            try:
                return getattr(self.inner, name)(*args)
            except RemoteUnavailable as e:
                if attempt == self.attempts:
                    raise RemoteUnavailable(f"{e.message} (gave up after {self.attempts} attempts)", hint=e.hint) from e
                self.retries += 1
                if self.on_retry:
                    self.on_retry(name, attempt, e)
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                self.sleep(delay * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")
