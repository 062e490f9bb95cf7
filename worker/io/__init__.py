"""Adapters to the world outside Redis: the S3 archive, guarded URL fetches, PDF checks."""
