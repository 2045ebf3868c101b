"""The event-type catalog's API."""
