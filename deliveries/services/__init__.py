"""Writes for events and deliveries: ingestion, attempts, replays, sweeps, retention."""
