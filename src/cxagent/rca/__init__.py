"""Root-cause analysis: hypotheses, evidence and ranking."""
