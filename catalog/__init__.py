"""The event-type catalog: tenants' event types, JSON Schemas and examples."""
