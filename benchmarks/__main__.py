"""``python -m benchmarks``: the benchmark table (``benchmarks.run``)."""
import sys

from benchmarks.run import main

sys.exit(main())
