"""The SyncBridge console (Textual) and the `syncbridge` command line."""

import os

# Textual paints a changed screen at its next frame tick, at most TEXTUAL_FPS times a
# second (60 by default): a key that changes the whole job list waited up to 17 ms for the
# tick. 120 halves that wait (key `G` at a million jobs: 49-52 -> 33-42 ms median,
# bench/README.md); frames are still only painted when something changed. Set here, before
# anything imports Textual, and only as a default: TEXTUAL_FPS in the environment wins.
os.environ.setdefault("TEXTUAL_FPS", "120")
