"""Data files shipped with avvp."""
