"""Corpora in NAB's layout: the embedded synthetic one, or NAB itself."""
