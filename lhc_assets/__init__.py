"""LHC topology classification as Dagster software-defined assets (README.md)."""

import os

# TensorFlow's C++ INFO lines (CPU features, XLA service, compiled clusters) are noise in a pipeline's output. Set
# before any module of the package imports TensorFlow, in the driver, Spark's Python workers and training workers
# alike; an explicit TF_CPP_MIN_LOG_LEVEL (0 shows everything) wins. (The oneDNN notice at start-up ignores it.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
