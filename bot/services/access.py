"""Who may run admin actions from Slack: the people listed in ADMIN_USERS.

The marketing rule (only marketing acknowledges) lives in services.loop.check_marketing, the
deal rule (only the owner or a sales manager logs or edits an entry) in
services.winloss.check_may_log and entry_for_edit; this is the third: admin actions.
"""

from __future__ import annotations

from collections.abc import Collection

from bot.config import Settings
from bot.services.errors import NotAllowed


def require_admin(admins: Settings | Collection[str], user_id: str) -> None:
    """Raise NotAllowed unless ``user_id`` is a Closeloop admin.

    ``admins`` is the settings (ADMIN_USERS is read from them) or the admin IDs themselves.
    The CLI has no user and does not call this: whoever runs ``closeloop`` is the operator.
    """
    ids = admins.admin_users if isinstance(admins, Settings) else admins
    if user_id and user_id in ids:
        return
    if not ids:
        raise NotAllowed(
            "Admin commands are switched off in Slack for this workspace (ADMIN_USERS is "
            "empty), so nothing was done. The operator can run the same with the closeloop "
            "command."
        )
    raise NotAllowed(
        "Only Closeloop admins (ADMIN_USERS) can run admin commands, so nothing was done. "
        "Ask one of them if this needs doing."
    )
