"""Deployment SLAs as data: `spec` (what a scenario promises) and `verdict` (each cell judged against it)."""
