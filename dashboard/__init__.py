"""The operator dashboard (a minimal page with health until its own issue lands)."""
