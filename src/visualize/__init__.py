"""Figures and text reports of a model and its data, one per module.

Every module that draws is in this package, so the backend is chosen here, once, before any of
them imports pyplot: Agg writes files only, as training machines have no display.
"""

import matplotlib

matplotlib.use("Agg")
