"""Fault injection: deliveries survive killed workers and restarted services."""
