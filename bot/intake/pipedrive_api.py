"""What Closeloop reads from Pipedrive's API (v1): a deal owner's email, ``GET /users/{id}``;
the token's own user, ``GET /users/me`` (``closeloop check``); and the won or lost deals, most
recently updated first, ``GET /deals?status=&sort=update_time DESC&start=&limit=`` (the daily
reconciliation); a lead's person and organization, ``GET /persons/{id}`` and
``GET /organizations/{id}``; all under PIPEDRIVE_API_URL (``https://api.pipedrive.com/v1``, or
a company's ``https://<company>.pipedrive.com/api/v1``). When write-back is on, a logged
entry's words and category are set on the deal's fields, ``PUT /deals/{id}`` with
``{"<field key>": value}``, and ``closeloop check`` reads ``GET /dealFields`` to see the fields
exist; lead write-back sets a rated lead's custom fields (the deals' custom fields),
``PATCH /leads/{id}``. The API token goes in the ``x-api-token`` header (Pipedrive's
"Authentication" page), never in the ``?api_token=`` query parameter, which would put it in
every proxy's access log."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request

from bot.intake.crm_http import ApiError, call_json, seconds

log = logging.getLogger(__name__)

TIMEOUT = 10.0  # seconds: processing runs after the answer, never before it
DEALS_PAGE = 100  # deals asked a page (Pipedrive's default; at most 500)


class PipedriveError(ApiError):
    """Pipedrive answered with an error, or could not be reached (``status`` 0); a 429's wait
    comes from Retry-After or x-ratelimit-reset."""

    crm = "Pipedrive"


class PipedriveApi:
    def __init__(self, *, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token

    def _get(self, path: str, query: dict[str, str] | None = None) -> dict:
        return self._request("GET", path, query=query)

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict | None = None,
    ) -> dict:
        url = self.api_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = call_json(
            PipedriveError,
            method=method,
            url=url,
            headers={"x-api-token": self._token},
            body=body,
            timeout=TIMEOUT,
            message=_message,
            retry_after=_wait,
        )
        if data.get("success") is False:  # Pipedrive's error shape, even with a 200
            raise PipedriveError(int(data.get("errorCode") or 0), str(data.get("error"))[:200])
        return data

    def user_email(self, user_id: str) -> str | None:
        """The user's email; None when Pipedrive has no such user (or it has no email)."""
        user = self._one("/users", user_id)
        email = user.get("email") if user is not None else None
        return email.strip().lower() if isinstance(email, str) and email.strip() else None

    def person(self, person_id: str) -> dict | None:
        """A person (``GET /persons/{id}``): ``name``, ``email`` (a list of ``{"value",
        "primary"}``), ``job_title``, ``org_name``...; None when Pipedrive has no such one."""
        return self._one("/persons", person_id)

    def organization(self, org_id: str) -> dict | None:
        """An organization (``GET /organizations/{id}``), its ``name``; None when not found."""
        return self._one("/organizations", org_id)

    def _one(self, collection: str, item_id: str) -> dict | None:
        try:
            data = self._get(f"{collection}/{urllib.parse.quote(item_id, safe='')}")
        except PipedriveError as err:
            if err.not_found:
                return None
            raise
        found = data.get("data")
        return found if isinstance(found, dict) else None

    def update_deal(self, deal_id: str, fields: dict[str, str | None]) -> None:
        """Set these fields (by key: a custom field's 40-character key) on the deal
        (PipedriveError: 404 for no such deal, 400 for a value it refuses, 429 with its
        Retry-After)."""
        self._request("PUT", f"/deals/{urllib.parse.quote(deal_id, safe='')}", body=fields)

    def update_lead(self, lead_id: str, fields: dict[str, str | None]) -> None:
        """Set these custom fields (a lead has the deals' custom fields, by their key) on the
        lead (``PATCH /leads/{id}``, the lead's UUID; PipedriveError: 404 for no such lead,
        400 for a value it refuses, 429 with its Retry-After)."""
        self._request("PATCH", f"/leads/{urllib.parse.quote(lead_id, safe='')}", body=fields)

    def deal_fields(self) -> dict[str, dict]:
        """Every deal field (standard and custom), by key (``GET /dealFields``, paged)."""
        fields: dict[str, dict] = {}
        start = 0
        for _ in range(100):  # bounded: 100 pages of 500 fields
            data = self._get("/dealFields", {"start": str(start), "limit": "500"})
            for field in data.get("data") or []:
                if isinstance(field, dict) and isinstance(field.get("key"), str):
                    fields[field["key"]] = field
            paging = (data.get("additional_data") or {}).get("pagination") or {}
            following = paging.get("next_start")
            if not paging.get("more_items_in_collection") or not isinstance(following, int):
                break
            if following <= start:
                break
            start = following
        return fields

    def me(self) -> dict:
        """The token's own user (``GET /users/me``): a cheap read that proves the token."""
        data = self._get("/users/me")
        user = data.get("data")
        return user if isinstance(user, dict) else {}

    def closed_deals_page(
        self, *, status: str, start: int = 0, limit: int = DEALS_PAGE
    ) -> tuple[list[dict], int | None]:
        """One page of the deals whose status is ``status`` (won or lost), most recently
        updated first; and where the next page starts (None after the last).

        v1's list is offset-paged: ``additional_data.pagination`` says
        ``more_items_in_collection`` and ``next_start``. A 429 carries its Retry-After."""
        data = self._get(
            "/deals",
            {
                "status": status,
                "sort": "update_time DESC",
                "start": str(start),
                "limit": str(limit),
            },
        )
        deals = [d for d in (data.get("data") or []) if isinstance(d, dict)]
        extra = data.get("additional_data")
        extra = extra if isinstance(extra, dict) else {}
        nested = extra.get("pagination")
        paging: dict = nested if isinstance(nested, dict) else extra
        if not paging.get("more_items_in_collection"):
            return deals, None
        following = paging.get("next_start")
        if isinstance(following, bool) or not isinstance(following, int):
            following = start + len(deals)
        return deals, (following if following > start and deals else None)


def log_api_error(err: PipedriveError) -> None:
    """A read that failed, logged for the operator: a refused token at ERROR (deliveries
    wait until it is fixed), anything else at WARNING."""
    if err.status in (401, 403):
        log.error(
            "Pipedrive refused PIPEDRIVE_API_TOKEN (%s); deliveries wait until it is fixed", err
        )
    else:
        log.warning("Pipedrive's API could not be read (%s); the delivery is tried again", err)


def _wait(err: urllib.error.HTTPError) -> float | None:
    wait = seconds(err.headers.get("Retry-After"))
    return wait if wait is not None else seconds(err.headers.get("x-ratelimit-reset"))


def _message(err: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(err.read().decode("utf-8", "replace"))
        return str(body.get("error") or err.reason)[:200]
    except (ValueError, AttributeError, OSError):
        return str(err.reason)[:200]
