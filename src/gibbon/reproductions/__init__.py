"""Reproduction targets grouped by paper family; ``gibbon.reproduce`` collects their ``targets()``."""
