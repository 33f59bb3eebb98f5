"""What Closeloop reads from HubSpot's CRM API (v3), with a private app's access token: a deal,
its owner's email, which stages of each deal pipeline are closed won or closed lost, and a
contact handed to sales (a lead); and, when write-back is on, what it writes: a logged entry's
words and category, set on the deal's own properties (``PATCH /crm/v3/objects/deals/{id}``,
scope crm.objects.deals.write), and whether those properties exist
(``GET /crm/v3/properties/deals/{name}``, closeloop check). Lead write-back likewise sets a
rated lead's contact's lead status (``PATCH /crm/v3/objects/contacts/{id}``, scope
crm.objects.contacts.write) and reads the contact properties
(``GET /crm/v3/properties/contacts/{name}``)."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime

from bot.config import Settings
from bot.intake.crm_http import ApiError, call_json, seconds
from bot.intake.errors import TryLater

log = logging.getLogger(__name__)

DEAL_PROPERTIES = (
    "dealname",
    "dealstage",
    "closedate",
    "amount",
    "hubspot_owner_id",
    "closed_lost_reason",
    "closed_won_reason",
    "pipeline",
)
# A contact handed to sales: who, where from, whose. hs_analytics_source is the original
# traffic source, hs_latest_source the latest; hs_analytics_source_data_1 the original
# source's first drill-down (the campaign, for a tracked campaign's traffic).
CONTACT_PROPERTIES = (
    "firstname",
    "lastname",
    "email",
    "company",
    "jobtitle",
    "lifecyclestage",
    "hubspot_owner_id",
    "hs_analytics_source",
    "hs_latest_source",
    "hs_analytics_source_data_1",
)
TIMEOUT = 10.0  # seconds: a delivery's processing runs after the answer, never before it
TEXT_LIMIT = 65_536  # characters a HubSpot text property holds
SEARCH_PAGE = 100  # HubSpot's search: at most 100 results a page, 10,000 a query
STAGES_TTL = 600.0  # seconds a pipeline's stages are trusted before they are read again


class HubSpotError(ApiError):
    """HubSpot answered with an error, or could not be reached (``status`` 0)."""

    crm = "HubSpot"


@dataclass(frozen=True)
class Stage:
    """A deal stage: ``outcome`` "won" (closed, probability 1.0), "lost" (closed, 0.0), or
    None (open, or closed at another probability: not a win or a loss)."""

    outcome: str | None


# (API URL, token) -> (when read, pipeline id -> stage id -> Stage). Every process keeps its
# own; a stage it does not know makes it read the pipelines again (a stage just added).
_stages: dict[tuple[str, str], tuple[float, dict[str, dict[str, Stage]]]] = {}
_stages_lock = threading.Lock()


class HubSpotApi:
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
        return call_json(
            HubSpotError,
            method=method,
            url=url,
            headers={"Authorization": f"Bearer {self._token}"},
            body=body,
            timeout=TIMEOUT,
            message=_message,
            retry_after=lambda err: seconds(err.headers.get("Retry-After")),
        )

    def deal(self, deal_id: str) -> dict[str, str | None]:
        """The deal's properties (DEAL_PROPERTIES); HubSpotError 404 when it does not exist."""
        data = self._get(
            f"/crm/v3/objects/deals/{urllib.parse.quote(deal_id, safe='')}",
            {"properties": ",".join(DEAL_PROPERTIES)},
        )
        props = data.get("properties") or {}
        return {k: (None if props.get(k) in (None, "") else str(props[k])) for k in DEAL_PROPERTIES}

    def contact(self, contact_id: str) -> dict[str, str | None]:
        """The contact's properties (CONTACT_PROPERTIES); HubSpotError 404 when it does not
        exist (deleted, merged away)."""
        data = self._get(
            f"/crm/v3/objects/contacts/{urllib.parse.quote(contact_id, safe='')}",
            {"properties": ",".join(CONTACT_PROPERTIES)},
        )
        props = data.get("properties") or {}
        return {
            k: (None if props.get(k) in (None, "") else str(props[k])) for k in CONTACT_PROPERTIES
        }

    def can_read_contacts(self) -> None:
        """One contact read (HubSpotError 403 without crm.objects.contacts.read)."""
        self._get("/crm/v3/objects/contacts", {"limit": "1"})

    def owner_email(self, owner_id: str) -> str | None:
        """The owner's email; None when HubSpot has no such owner (or it has no email)."""
        try:
            data = self._get(f"/crm/v3/owners/{urllib.parse.quote(owner_id, safe='')}")
        except HubSpotError as err:
            if err.not_found:
                return None
            raise
        email = data.get("email")
        return email.strip().lower() if isinstance(email, str) and email.strip() else None

    def stage(self, pipeline: str | None, stage: str) -> Stage | None:
        """Whether ``stage`` (of ``pipeline``; any pipeline when None) is closed, and won;
        None when no pipeline has it."""
        key = (self.api_url, self._token)
        with _stages_lock:
            cached = _stages.get(key)
        fresh = cached is not None and time.monotonic() - cached[0] < STAGES_TTL
        if cached is not None and fresh:
            found = _find(cached[1], pipeline, stage)
            if found is not None:
                return found
        pipelines = self.pipelines()
        with _stages_lock:
            _stages[key] = (time.monotonic(), pipelines)
        return _find(pipelines, pipeline, stage)

    def update_deal(self, deal_id: str, properties: dict[str, str]) -> None:
        """Set these properties on the deal (HubSpotError: 400 VALIDATION_ERROR for a
        property that does not exist or a value it refuses, 404 for no such deal, 429 with
        its Retry-After)."""
        self._request(
            "PATCH",
            f"/crm/v3/objects/deals/{urllib.parse.quote(deal_id, safe='')}",
            body={"properties": properties},
        )

    def update_contact(self, contact_id: str, properties: dict[str, str]) -> None:
        """Set these properties on the contact (lead write-back, scope
        crm.objects.contacts.write; HubSpotError: 400 VALIDATION_ERROR for a property that
        does not exist or an option it does not have, 404 for no such contact, 429)."""
        self._request(
            "PATCH",
            f"/crm/v3/objects/contacts/{urllib.parse.quote(contact_id, safe='')}",
            body={"properties": properties},
        )

    def contact_property(self, name: str) -> dict:
        """A contact property's definition (``label``, ``type``, ``fieldType``, ``options``
        with their internal ``value``); HubSpotError 404 when there is none by that name."""
        return self._get(f"/crm/v3/properties/contacts/{urllib.parse.quote(name, safe='')}")

    def deal_property(self, name: str) -> dict:
        """A deal property's definition (``label``, ``type``, ``fieldType``); HubSpotError 404
        when there is none by that internal name."""
        return self._get(f"/crm/v3/properties/deals/{urllib.parse.quote(name, safe='')}")

    def can_read_owners(self) -> None:
        """One owner read (HubSpotError when the token may not: 403 without the scope)."""
        self._get("/crm/v3/owners", {"limit": "1"})

    def pipelines(self) -> dict[str, dict[str, Stage]]:
        """Every deal pipeline's stages, by pipeline id and stage id."""
        data = self._get("/crm/v3/pipelines/deals")
        pipelines: dict[str, dict[str, Stage]] = {}
        for pipeline in data.get("results") or []:
            stages = pipelines.setdefault(str(pipeline.get("id")), {})
            for stage in pipeline.get("stages") or []:
                meta = stage.get("metadata") or {}
                closed = str(meta.get("isClosed", "")).strip().lower() == "true"
                try:
                    probability = float(meta.get("probability", "nan"))
                except (TypeError, ValueError):
                    probability = float("nan")
                outcome = None
                if closed and probability == 1.0:
                    outcome = "won"
                elif closed and probability == 0.0:
                    outcome = "lost"
                stages[str(stage.get("id"))] = Stage(outcome=outcome)
        return pipelines

    def closed_deals_page(
        self, *, since: datetime, stages: list[str], after: str | None = None
    ) -> tuple[list[dict[str, str | None]], str | None]:
        """One page (SEARCH_PAGE) of the deals in ``stages`` whose close date is ``since`` or
        later, oldest close first (CRM search API); their properties (DEAL_PROPERTIES and
        ``hs_object_id``), and the cursor of the next page (None after the last).

        HubSpot's search answers at most 10,000 results a query: a cursor past that is
        HubSpotError 400, as any other refusal; a 429 carries its Retry-After."""
        body: dict = {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": "closedate",
                            "operator": "GTE",
                            "value": str(int(since.timestamp() * 1000)),
                        },
                        {"propertyName": "dealstage", "operator": "IN", "values": stages},
                    ]
                }
            ],
            "sorts": [{"propertyName": "closedate", "direction": "ASCENDING"}],
            "properties": [*DEAL_PROPERTIES, "hs_object_id"],
            "limit": SEARCH_PAGE,
        }
        if after is not None:
            body["after"] = after
        data = self._request("POST", "/crm/v3/objects/deals/search", body=body)
        deals = []
        for result in data.get("results") or []:
            props = result.get("properties") or {}
            deal = {k: (None if props.get(k) in (None, "") else str(props[k])) for k in props}
            deal["hs_object_id"] = str(result.get("id") or deal.get("hs_object_id") or "")
            deals.append(deal)
        cursor = ((data.get("paging") or {}).get("next") or {}).get("after")
        return deals, (str(cursor) if cursor not in (None, "") else None)


def configured_api(settings: Settings) -> HubSpotApi:
    """The API with HUBSPOT_ACCESS_TOKEN; TryLater when HubSpot is not configured (any
    more: a delivery stored before the settings were removed waits for them)."""
    if not settings.hubspot_configured:
        raise TryLater("HubSpot is not configured any more")
    assert settings.hubspot_access_token is not None
    return HubSpotApi(api_url=settings.hubspot_api_url, token=settings.hubspot_access_token)


def log_api_error(err: HubSpotError, *, scope: str = "crm.objects.deals.read") -> None:
    """A read that failed, logged for the operator: a refused token or a missing ``scope``
    at ERROR (deliveries wait until it is fixed), anything else at WARNING."""
    if err.status == 403:
        log.error(
            "HubSpot refused the read (%s): give the private app %s; deliveries wait until "
            "it is fixed",
            err,
            scope,
        )
    elif err.status == 401:
        log.error(
            "HubSpot refused HUBSPOT_ACCESS_TOKEN (%s); deliveries wait until it is fixed", err
        )
    else:
        log.warning("HubSpot's API could not be read (%s); the delivery is tried again", err)


def _find(pipelines: dict[str, dict[str, Stage]], pipeline: str | None, stage: str) -> Stage | None:
    if pipeline is not None:
        return pipelines.get(pipeline, {}).get(stage)
    for stages in pipelines.values():
        if stage in stages:
            return stages[stage]
    return None


def _message(err: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(err.read().decode("utf-8", "replace"))
        return _validation(str(body.get("message") or body.get("category") or err.reason))[:200]
    except (ValueError, AttributeError, OSError):
        return str(err.reason)[:200]


def _validation(message: str) -> str:
    """A write's "Property values were not valid: [{...}]" said shortly, each problem's code
    and property first (``INVALID_OPTION hs_lead_status: JUNK was not one of ...``), so the
    200 characters kept name what was refused."""
    head, sep, rest = message.partition(": [")
    try:
        problems = json.loads("[" + rest) if sep else None
    except ValueError:
        return message
    if not isinstance(problems, list) or not all(isinstance(p, dict) for p in problems):
        return message
    said = [f"{p.get('error')} {p.get('name')}: {p.get('message')}" for p in problems]
    return f"{head}: {'; '.join(said)}"
