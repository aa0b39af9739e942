"""Reusable widgets of the console, one per file."""
