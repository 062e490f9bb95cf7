"""The operators' audit trail: every action taken through ``/v1`` (retry, cancel, replay,
backfill, accounts check) as one log line naming the API token that asked (``name:token`` in
FAXRELAY_API_TOKENS; a bare token by its place, ``token-2``) and counted in
``faxrelay_operator_actions_total``. The token itself is never written.
"""

from __future__ import annotations

import logging

from worker import metrics

log = logging.getLogger("faxrelay.audit")


def audit(who: str, action: str, target: str, outcome: str, detail: str = "") -> None:
    metrics.operator_action(action, outcome)
    fax_id = target if target.startswith("fx_") else None
    log.info(
        "operator %s %s by token %s: %s%s",
        action, target, who, outcome, f" ({detail})" if detail else "",
        extra={"fax_id": fax_id} if fax_id else None,
    )  # fmt: skip
