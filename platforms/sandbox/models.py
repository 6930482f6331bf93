"""Sandbox platform tables (see platforms/sandbox/)."""
