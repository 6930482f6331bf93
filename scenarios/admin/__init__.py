"""Admin for scenarios, preflights, guardrail policies, overrides and deployments.

The scenario page edits the plan (items inline, validated with the import service's
rules and saved through ``scenario_create``/``scenario_update``), shows the latest
preflight as a diff by section with guardrail badges, and offers Preflight, Dry run and
Deploy live. A live deploy is confirmed on a page that shows the diff, the breaches and
the totals and carries an idempotency key made when the page was rendered, so a double
click or a resubmitted form returns the same deployment instead of deploying twice.
Deployment pages show per-entity results and progress as a bar coloured by outcome
(refreshing while queued, running or rolling back) with confirmed Retry failed entities
and Roll back deployment buttons. Overrides are approved or rejected on their own page.

One module per model or flow (``scenarios`` with its parts ``items``, ``imports`` and
``deploy``; ``preflight``, ``guardrails``, ``overrides``, ``deployments``), with the
shared presentation in ``presentation`` and the diff view in ``diff``; importing this
package registers them all. Every button calls
a service (which checks permission and tenant again) and turns its domain errors into
admin messages.
"""

from scenarios.admin.deployments import DeploymentAdmin, result_row
from scenarios.admin.diff import diff_context, preflight_freshness, preflight_progress
from scenarios.admin.guardrails import GuardrailPolicyAdmin, change_window_text, window_zone_help
from scenarios.admin.items import ScenarioItemInline
from scenarios.admin.overrides import GuardrailOverrideAdmin
from scenarios.admin.preflight import OverridesInline, PreflightRunAdmin
from scenarios.admin.presentation import breach_badge, deployment_counts, preflight_badge, progress_segments
from scenarios.admin.scenarios import ScenarioAdmin

__all__ = [
    "DeploymentAdmin",
    "GuardrailOverrideAdmin",
    "GuardrailPolicyAdmin",
    "OverridesInline",
    "PreflightRunAdmin",
    "ScenarioAdmin",
    "ScenarioItemInline",
    "breach_badge",
    "change_window_text",
    "deployment_counts",
    "diff_context",
    "preflight_badge",
    "preflight_freshness",
    "preflight_progress",
    "progress_segments",
    "result_row",
    "window_zone_help",
]
