"""Shared statistics for experiments and the storefront."""
