"""Admin: alerts (open first), channels per tenant with a test button, watch settings, watches.

Every page presents what ``observability.services`` decides: acknowledging, resolving,
sending a test and saving settings call the services, which check roles and tenants.
Channel secrets are write-only: the form never shows a stored value, and an empty
secret field on an existing channel keeps what is stored.

One module per model or flow: ``alerts`` (with their deliveries), ``channels`` and
``watches`` (the settings and the watched changes). Importing the package registers
every admin.
"""

from observability.admin.alerts import SEVERITY_TONES, STATUS_TONES, AlertAdmin, DeliveryInline
from observability.admin.channels import ChannelAdmin, ChannelForm
from observability.admin.watches import ObservabilitySettingsAdmin, WatchAdmin, WatchDayInline

__all__ = [
    "SEVERITY_TONES",
    "STATUS_TONES",
    "AlertAdmin",
    "ChannelAdmin",
    "ChannelForm",
    "DeliveryInline",
    "ObservabilitySettingsAdmin",
    "WatchAdmin",
    "WatchDayInline",
]
