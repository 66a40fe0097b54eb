"""Opsdeck's Dramatiq middleware."""
