"""Services for recommendations and actions. Every write goes through these."""
