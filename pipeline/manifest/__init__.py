"""Manifests: the lines a user writes (JSONL or CSV), read, validated and turned into jobs with stable ids.

Nothing here spends or talks to a service; every problem is reported as FILE:LINE.
"""
