"""The one way Closeloop calls a CRM's REST API (HubSpot's, Pipedrive's): JSON in and out,
a time limit, and every failure as the CRM's own :class:`ApiError` (its HTTP status, or 0 when
the CRM could not be reached or did not answer JSON; a 429's wait in ``retry_after``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping


class ApiError(Exception):
    """A CRM answered with an error, or could not be reached (``status`` 0)."""

    crm = "The CRM"

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{self.crm} {status or 'unreachable'}: {message}")
        self.status = status
        self.retry_after = retry_after  # seconds, from a 429's Retry-After

    @property
    def not_found(self) -> bool:
        return self.status == 404


def seconds(value: str | None) -> float | None:
    """A header's number of seconds (``Retry-After: 2``), None when absent or not a number."""
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def call_json(
    error: type[ApiError],
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: dict | None,
    timeout: float,
    message: Callable[[urllib.error.HTTPError], str],
    retry_after: Callable[[urllib.error.HTTPError], float | None],
) -> dict:
    """The CRM's JSON object answer to one request; ``error`` for anything else."""
    sent = {**headers, "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        raise error(err.code, message(err), retry_after=retry_after(err)) from None
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise error(0, str(err)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(0, f"not JSON: {err}") from None
    if not isinstance(answer, dict):
        raise error(0, "not a JSON object")
    return answer
