"""Networks and their math: MM-CSE, the VALOR baseline, losses, the official AVVP metrics.

torch and NumPy only: no file formats, no store, no Prefect.
"""
