"""An app whose import raises (the loader must say so in one line)."""

raise RuntimeError("boom while importing the app")
