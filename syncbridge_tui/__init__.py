"""The SyncBridge console (Textual) and the `syncbridge` command line."""

import os

# Textual paints a changed screen at its next frame tick, at most TEXTUAL_FPS times a
# second (60 by default): a key that changes the whole job list waited up to a frame for
# the tick. 120 halves that wait (measured in bench/README.md); frames are still only
# painted when something changed. Set here because every console module imports Textual
# and this runs before any of them; it imports nothing, so the command line (Textual-free)
# pays nothing for it. Only a default: TEXTUAL_FPS in the environment wins.
os.environ.setdefault("TEXTUAL_FPS", "120")
