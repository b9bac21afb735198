"""A client for the Serve application that retries what can be retried.

A segmentation request has no side effect, so sending it again is safe. What
is worth sending again, and what is not:

* **retried**: a connection refused, reset or timed out; 502, 504; 503 (the
  replica was out of device memory or is being replaced: the answer has
  ``"retry": true`` and ``Retry-After``); 408 (Serve's request timeout); a
  500 that is *not* the application's JSON (Ray's proxy answers a plain-text
  ``Internal Server Error`` when the replica died with the request in it).
* **not retried**: every other 4xx (the request itself is wrong: sending it
  again gives the same answer) and a 500 from the application (its JSON has a
  ``replica`` field: a bug, reported, not hidden by retries).

Attempts are spaced by exponential backoff with full jitter (``base_s`` times
2**attempt, capped at ``cap_s``, times a random factor in [0, 1); at least
``Retry-After`` when the server sent one), so that clients that failed
together do not come back together. Every call ends within ``deadline_s``:
each attempt's socket timeout is what is left of it. Usage::

    from client import segment
    outcome = segment("http://127.0.0.1:8000/segment", {"image": ..., "point_coords": [[x, y]], "point_labels": [1]})
    outcome.status, outcome.body, outcome.attempts
"""

from __future__ import annotations

import http.client
import json
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple, Union

RETRIED_STATUSES = (408, 502, 503, 504)


@dataclass
class Outcome:
    """How a request ended: ``status`` (None: no HTTP answer at all), the
    decoded body (or the text), the number of attempts, and what each attempt got."""

    status: Optional[int]
    body: Any
    attempts: int
    history: List[Union[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def retriable(self) -> bool:
        """The last answer was one that a later attempt may change."""
        return retriable(self.status, self.body)


def retriable(status: Optional[int], body: Any) -> bool:
    if status is None or status in RETRIED_STATUSES:
        return True
    if status == 500:
        return not (isinstance(body, dict) and "replica" in body)  # Ray's own 500: the replica died
    return False


def _post_once(url: str, data: bytes, timeout: float) -> Tuple[Optional[int], Any, Optional[float]]:
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _decode(response.read()), None
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        try:
            wait = float(retry_after) if retry_after is not None else None
        except ValueError:
            wait = None
        return exc.code, _decode(exc.read()), wait
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut short
        reason = getattr(exc, "reason", exc)
        return None, f"{type(reason).__name__}: {reason}", None


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def segment(url: str, body: Union[dict, bytes], *, attempts: int = 5, deadline_s: float = 60.0,
            base_s: float = 0.1, cap_s: float = 2.0, sleep: Callable[[float], None] = time.sleep,
            rng: Optional[random.Random] = None) -> Outcome:
    """POST ``body`` to ``url``; retry as the module says, at most ``attempts``
    times and never past ``deadline_s`` seconds in all."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    rng = rng or random.Random()
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    started = time.monotonic()
    history: List[Union[int, str]] = []
    status: Optional[int] = None
    answer: Any = None
    for attempt in range(attempts):
        left = deadline_s - (time.monotonic() - started)
        if left <= 0:
            break
        status, answer, retry_after = _post_once(url, data, timeout=left)
        history.append(status if status is not None else "no answer")
        if not retriable(status, answer) or attempt == attempts - 1:
            break
        wait = rng.random() * min(cap_s, base_s * 2**attempt)
        if retry_after is not None:
            wait = max(wait, min(retry_after, cap_s))
        left = deadline_s - (time.monotonic() - started)
        if wait >= left:
            break
        sleep(wait)
    return Outcome(status, answer, len(history), history, time.monotonic() - started)
