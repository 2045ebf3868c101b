"""Tests of the project beyond one machine, simulated on 127.0.0.1 (issue 31)."""
