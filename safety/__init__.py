"""The one safety gate every change passes, whatever its door (DESIGN.md section 6).

- ``safety.values``: value sanity (finite, a per-currency floor and ceiling, the
  platform's precision);
- ``safety.four_eyes``: nobody alone approves, deploys live or overrides what they
  created or last changed, when the tenant's policy asks for it;
- ``safety.schedule``: the execution policy (on approval, next change window, manual)
  turned into an action's ``next_attempt_at`` and a sentence saying when it runs;
- ``safety.gate``: the doors (recommendation, approval, execute, rollback, live deploy,
  retry, autopilot) calling the above, a one-entity preflight per single action and the
  critical-breach rule shared with live deploys.

Models stay in their apps; this package holds rules only.
"""
