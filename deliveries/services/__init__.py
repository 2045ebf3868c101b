"""Writes for events and deliveries: ingestion, attempts, replays and sweeps."""
