"""CX metrics: definitions on sufficient statistics."""
