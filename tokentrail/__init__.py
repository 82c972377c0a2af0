"""TokenTrail shared kernel: event schema, settings, pricing, store and runtime.

Every component (producers, stream processors, API) imports this package and
none of each other, so the data contract lives in exactly one place.
"""

__version__ = "0.1.0"
