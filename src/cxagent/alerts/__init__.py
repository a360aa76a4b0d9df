"""Alert channels for continuous monitoring: Slack incoming webhooks, signed JSON webhooks
and email, one message per incident per channel with later updates grouped to it.

``settings`` (the channel models), ``events`` (fingerprint, material changes, the JSON
event), ``messages`` (the words), ``signing`` (HMAC signatures and their verification),
``retry`` (backoff), ``channels`` (the transports), ``dispatch`` (decide, send, record).
See docs/alerts.md.
"""

from cxagent.alerts.channels import Sender
from cxagent.alerts.dispatch import (
    Decision,
    DispatchResult,
    decide,
    dispatch,
    pending_incidents,
    stored_causes,
)
from cxagent.alerts.events import Alert, build_alert, fingerprint, material_changes
from cxagent.alerts.settings import (
    AlertConfigError,
    Channel,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
    check_secrets,
    parse_channels,
)
from cxagent.alerts.signing import sign, verify_signature

__all__ = [
    "Alert",
    "AlertConfigError",
    "Channel",
    "Decision",
    "DispatchResult",
    "EmailChannel",
    "Sender",
    "SlackChannel",
    "WebhookChannel",
    "build_alert",
    "check_secrets",
    "decide",
    "dispatch",
    "fingerprint",
    "material_changes",
    "parse_channels",
    "pending_incidents",
    "sign",
    "stored_causes",
    "verify_signature",
]
