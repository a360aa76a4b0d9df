"""Experiment planning: sample size, power and duration for tests of CX fixes."""
