"""The OAuth scopes each Web API method needs, and the bot scopes Closeloop needs.

``closeloop check`` (and ``closeloop run`` at start) compares :data:`NEEDED` with the scopes
Slack granted the token (the ``x-oauth-scopes`` header of auth.test); the tests' fake Slack
grants what manifest.yml asks for and refuses any other call with ``missing_scope``, as
Slack does, using :data:`METHOD_SCOPES`; tests/test_scopes.py checks that manifest.yml asks
for exactly :data:`NEEDED` and that :data:`METHODS_USED` is what the code in bot/ calls.
"""

from __future__ import annotations

from collections.abc import Iterable

# The kinds of conversation, in the order Slack lists a conversations.* method's scopes.
PUBLIC, PRIVATE, IM, MPIM = "public", "private", "im", "mpim"
CONVERSATION_KINDS = (PUBLIC, PRIVATE, IM, MPIM)

# Method -> the bot-token scopes it accepts. One scope: it is needed. Four: one per kind of
# conversation (CONVERSATION_KINDS order); the one for the conversation's kind is needed.
# () : no scope (any valid token).
#
# Source: Slack's Web API spec, slackapi/slack-api-specs web-api/slack_web_openapi_v2.json
# (October 2020; ../shared/slack-reference/web-api/, extract in
# tests/slack_samples/web_api_method_scopes.openapi_2020.json): each path's
# security.slackAuth. That spec still names the pre-2020 scopes: chat:write:bot is
# chat:write, and files:write:user is files:write, for a bot token today.
# Methods newer than the spec, from Slack's method pages:
#   files.getUploadURLExternal   https://api.slack.com/methods/files.getUploadURLExternal
#   files.completeUploadExternal https://api.slack.com/methods/files.completeUploadExternal
#   (both: bot scope files:write)
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.getPermalink": (),
    "chat.postEphemeral": ("chat:write",),
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "conversations.history": (
        "channels:history",
        "groups:history",
        "im:history",
        "mpim:history",
    ),
    "conversations.info": ("channels:read", "groups:read", "im:read", "mpim:read"),
    "conversations.open": ("channels:write", "groups:write", "im:write", "mpim:write"),
    "conversations.replies": (
        "channels:history",
        "groups:history",
        "im:history",
        "mpim:history",
    ),
    "files.completeUploadExternal": ("files:write",),
    "files.getUploadURLExternal": ("files:write",),
    "files.info": ("files:read",),
    "files.upload": ("files:write",),
    "reactions.add": ("reactions:write",),
    "usergroups.users.list": ("usergroups:read",),
    "users.info": ("users:read",),
    "users.list": ("users:read",),
    "users.lookupByEmail": ("users:read.email",),
    "views.open": (),
    "views.publish": (),
    "views.push": (),
    "views.update": (),
}

# The Web API methods Closeloop calls, and for a conversations.* method the kinds of
# conversation it calls it on (tests/test_scopes.py reads bot/ to keep this list true).
METHODS_USED: dict[str, tuple[str, ...]] = {
    "auth.test": (),  # the workspace's URL; closeloop check
    "chat.postMessage": (),
    "chat.update": (),
    "chat.postEphemeral": (),
    # a DM with one person (history.find looks in it before resending)
    "conversations.open": (IM,),
    # before resending: did the first try arrive after all? (marketing's channel may be
    # private; DMs too)
    "conversations.history": (PUBLIC, PRIVATE, IM),
    "conversations.replies": (PUBLIC, PRIVATE, IM),
    "conversations.info": (PUBLIC, PRIVATE),  # closeloop check: the configured channels
    "users.info": (),
    "users.list": (),
    "users.lookupByEmail": (),
    "usergroups.users.list": (),
    "views.open": (),
    "views.publish": (),
    # files_upload_v2: the digest's chart
    "files.getUploadURLExternal": (),
    "files.completeUploadExternal": (),
}

# Scopes that no Web API call of ours needs but that Slack needs to send us something.
EVENT_SCOPES: dict[str, str] = {
    "message.im": "im:history",  # the three bullets a rep types in the DM
    "reaction_added": "reactions:read",  # marketing's reaction closes the loop
    "slash commands (/closeloop, /winloss)": "commands",
}
# Events that need no scope of their own.
EVENTS_WITHOUT_SCOPE = ("app_home_opened",)


def scope_for(method: str, kind: str | None = None) -> str | None:
    """The scope ``method`` needs (on a conversation of ``kind``); None when it needs none.
    For a method with one scope per kind and no ``kind`` given: the first (public)."""
    scopes = METHOD_SCOPES[method]
    if not scopes:
        return None
    if len(scopes) == 1:
        return scopes[0]
    return scopes[CONVERSATION_KINDS.index(kind) if kind else 0]


def needed_scopes(methods: dict[str, Iterable[str]] | None = None) -> frozenset[str]:
    """The bot scopes ``methods`` (method -> conversation kinds; default
    :data:`METHODS_USED`) need, with the :data:`EVENT_SCOPES`."""
    needed = set(EVENT_SCOPES.values())
    for method, kinds in (METHODS_USED if methods is None else methods).items():
        scopes = METHOD_SCOPES[method]
        if len(scopes) > 1:
            needed.update(scope_for(method, kind) or "" for kind in kinds)
        else:
            needed.update(scopes)
    needed.discard("")
    return frozenset(needed)


NEEDED: frozenset[str] = needed_scopes()


def parse_granted(header: str | None) -> frozenset[str]:
    """The scopes of an ``x-oauth-scopes`` header ("chat:write,users:read")."""
    return frozenset(s.strip() for s in (header or "").split(",") if s.strip())
