"""``python -m bench.ops``: the op microbenchmark (see pynas.perf.ops)."""
from pynas.perf.ops import main

raise SystemExit(main())
