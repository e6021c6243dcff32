"""ganinv built-in plugin package (filled in by its issue)."""
