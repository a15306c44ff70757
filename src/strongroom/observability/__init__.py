"""Metrics, structured logs and their redaction."""
