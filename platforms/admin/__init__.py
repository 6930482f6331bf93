"""Admin for platform connections, the entity mirror and daily performance.

Credentials are write-only here: the change form asks for each credential field by name
(always empty, never rendered), and pages show only the names of the stored keys. The
entity mirror and daily performance are read-only because sync, not people, keeps them
true to the platform.

One module per model or flow: ``forms`` (the connection form with its write-only
credential inputs, and the circuit reset form), ``connections``, ``entities`` and
``performance``. Importing the package registers every admin.
"""

from platforms.admin.connections import CIRCUIT_TONES, PlatformConnectionAdmin
from platforms.admin.entities import EntityActionsInline, PlatformEntityAdmin
from platforms.admin.forms import CircuitResetForm, PlatformConnectionForm, WriteOnlyInput
from platforms.admin.performance import EntityPerformanceDailyAdmin

__all__ = [
    "CIRCUIT_TONES",
    "CircuitResetForm",
    "EntityActionsInline",
    "EntityPerformanceDailyAdmin",
    "PlatformConnectionAdmin",
    "PlatformConnectionForm",
    "PlatformEntityAdmin",
    "WriteOnlyInput",
]
