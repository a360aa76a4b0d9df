"""Scenario engine: causal synthetic marketplace data with planted causes."""
