"""``python -m bench.supernet``: the supernet search-step benchmark (see pynas.perf.supernet)."""
from pynas.perf.supernet import main

raise SystemExit(main())
