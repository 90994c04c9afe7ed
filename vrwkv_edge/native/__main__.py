"""``python -m vrwkv_edge.native [--force] [--no-cuda] ...``: the same build as ``vrwkv-edge build-native``."""
import sys

from .build import main

sys.exit(main())
