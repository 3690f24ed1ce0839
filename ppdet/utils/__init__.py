"""Training utilities: logging statistics."""
