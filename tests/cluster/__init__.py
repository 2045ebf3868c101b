"""Cluster mode: the project's quorum queues on a three-node RabbitMQ cluster."""
