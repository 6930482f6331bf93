"""Admin for the planning loop: settings (changed through the service), runs with charts,
the rollout page, constraints, fits, ingestions and the read-only decision log.

One module per model or flow: ``automation`` (the settings, their actions and the
rollout page), ``constraints``, ``runs`` and ``records`` (fits, decision log,
ingestions). Importing the package registers every admin.
"""

from planning.admin.automation import AutomationSettingsAdmin, AutomationSettingsForm
from planning.admin.constraints import EntityConstraintAdmin
from planning.admin.records import CurveFitAdmin, DecisionLogAdmin, IngestionRunAdmin
from planning.admin.runs import LIGHT_TONES, PlannerRunAdmin

__all__ = [
    "LIGHT_TONES",
    "AutomationSettingsAdmin",
    "AutomationSettingsForm",
    "CurveFitAdmin",
    "DecisionLogAdmin",
    "EntityConstraintAdmin",
    "IngestionRunAdmin",
    "PlannerRunAdmin",
]
