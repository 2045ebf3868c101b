"""The consumer portal: pages where one consumer manages its own endpoints."""
