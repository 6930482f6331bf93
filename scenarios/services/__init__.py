"""Services for scenarios: import, preflight, guardrails, forecasts, deployment."""
