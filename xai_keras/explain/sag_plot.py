"""The old home of `plot_sag`, kept so `from xai_keras.explain.sag_plot import plot_sag` works;
the drawing lives in `xai_keras.explain.sag.picture`."""

from xai_keras.explain.sag.picture import plot_sag

__all__ = ["plot_sag"]
