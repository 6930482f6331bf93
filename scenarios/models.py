"""Scenarios, preflights and deployments."""
