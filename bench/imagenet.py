"""``python -m bench.imagenet``: the ImageNet input-pipeline benchmark (see pynas.perf.imagenet)."""
from pynas.perf.imagenet import main

raise SystemExit(main())
