"""``python -m winit_sim`` is the ``winit-sim`` command."""
import sys

from .cli import main

sys.exit(main())
