"""What Closeloop reads from Pipedrive's API (v1): a deal owner's email, ``GET /users/{id}``
under PIPEDRIVE_API_URL (``https://api.pipedrive.com/v1``, or a company's
``https://<company>.pipedrive.com/api/v1``). The API token goes in the ``x-api-token`` header
(Pipedrive's "Authentication" page), never in the ``?api_token=`` query parameter, which would
put it in every proxy's access log."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 10.0  # seconds: processing runs after the answer, never before it


class PipedriveError(Exception):
    """Pipedrive answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Pipedrive {status or 'unreachable'}: {message}")
        self.status = status

    @property
    def not_found(self) -> bool:
        return self.status == 404


class PipedriveApi:
    def __init__(self, *, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token

    def _get(self, path: str) -> dict:
        req = urllib.request.Request(
            self.api_url + path,
            headers={"x-api-token": self._token, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            raise PipedriveError(err.code, _message(err)) from None
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise PipedriveError(0, str(err)) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PipedriveError(0, f"not JSON: {err}") from None
        if not isinstance(data, dict):
            raise PipedriveError(0, "not a JSON object")
        if data.get("success") is False:  # Pipedrive's error shape, even with a 200
            raise PipedriveError(int(data.get("errorCode") or 0), str(data.get("error"))[:200])
        return data

    def user_email(self, user_id: str) -> str | None:
        """The user's email; None when Pipedrive has no such user (or it has no email)."""
        try:
            data = self._get(f"/users/{urllib.parse.quote(user_id, safe='')}")
        except PipedriveError as err:
            if err.not_found:
                return None
            raise
        user = data.get("data")
        email = user.get("email") if isinstance(user, dict) else None
        return email.strip().lower() if isinstance(email, str) and email.strip() else None


def _message(err: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(err.read().decode("utf-8", "replace"))
        return str(body.get("error") or err.reason)[:200]
    except (ValueError, AttributeError, OSError):
        return str(err.reason)[:200]
