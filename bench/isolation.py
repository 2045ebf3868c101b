"""Slow-endpoint isolation benchmark, now part of the harness (`python -m bench`).

    .venv/bin/python bench/isolation.py [harness options]

Runs the harness's `isolation` and `slow` scenarios: healthy endpoints alone and
beside one that never answers (throughput ratio, p99 latency), and 200 ms
receivers under several pool sizes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["--scenarios", "isolation,slow", *sys.argv[1:]]))
