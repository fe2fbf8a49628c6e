"""The search spaces that ship with autoprune, importable as package data (``autoprune.search_spaces``)."""
