"""avvp: raw videos to audio-visual event timelines (LLP, VALOR pseudo-labels, MM-CSE)."""

__version__ = "0.1.0"
