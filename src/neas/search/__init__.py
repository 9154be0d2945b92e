"""Candidate evaluation and the K-path evolution search."""
