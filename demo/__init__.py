"""`make demo`: a narrated end-to-end walk-through on the embedded default."""
