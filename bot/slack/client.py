"""Web API clients, and the pacing of chat.postMessage.

Two clients on ``SLACK_API_URL``:

- :func:`make_client`, for reads and for what a person is waiting on (views.open,
  views.publish, users.info ...): dropped connections and 5xx answers are retried, and a
  ``ratelimited`` answer is waited out a couple of times.
- :func:`sender_client`, for the outbox only: it never sleeps inside a call (a Retry-After
  goes back to the outbox as the message's ``not_before``), and never retries a call that
  could post a second message.
"""

from __future__ import annotations

import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.config import Settings

# What a Web API call can raise once its retries are spent: an error answer, or the network.
SLACK_ERRORS = (SlackClientError, OSError)

# Posting twice is worse than posting late: a connection that dropped after Slack took the
# message would duplicate it, so these are never retried blindly. The outbox looks for the
# message by its metadata before it sends it again.
NOT_IDEMPOTENT = (
    "chat.postMessage",
    "chat.postEphemeral",
    "files.completeUploadExternal",
    "files.upload",
)


class SafeConnectionRetryHandler(ConnectionErrorRetryHandler):
    """Retries dropped connections, except for calls that would post a second message."""

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if request.url.rstrip("/").endswith(NOT_IDEMPOTENT):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


def make_client(settings: Settings, *, timeout: int = 10) -> WebClient:
    """The client for reads and for what a person waits on (see the module docstring)."""
    client = WebClient(
        token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=timeout
    )
    client.retry_handlers = [
        SafeConnectionRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=2),
        ServerErrorRetryHandler(max_retry_count=2),
    ]
    return client


def sender_client(client: WebClient) -> WebClient:
    """The outbox's twin of ``client``: no waiting inside a call, no blind resend."""
    twin = WebClient(token=client.token, base_url=client.base_url, timeout=client.timeout)
    twin.retry_handlers = [SafeConnectionRetryHandler(max_retry_count=2)]
    return twin


class Pacer:
    """A token bucket: at most ``rate`` calls a second on average, ``burst`` at once.

    The outbox's posts go through it, so Closeloop paces itself to Slack's limits instead of
    hammering Slack until it answers ``ratelimited``.
    """

    def __init__(self, rate: float, burst: int = 1, clock=time.monotonic, sleep=time.sleep):
        self.rate, self.burst = rate, max(1, burst)
        self._tokens = float(self.burst)
        self._last = clock()
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    @classmethod
    def for_rate(cls, rate: float) -> Pacer:
        # A tenth of a second's worth at once: Slack's own bucket keeps the rest of its burst
        # as slack for network jitter, so pacing at its limit rarely meets a 429.
        return cls(rate, burst=max(1, int(rate / 10)))

    def refund(self) -> None:
        """Give back the token of a call Slack refused (429 or 5xx): it posted nothing."""
        with self._lock:
            self._tokens = min(float(self.burst), self._tokens + 1)

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            delay = (1 - self._tokens) / self.rate
            self._tokens = 0.0
            self._last = now + delay
        self._sleep(delay)
