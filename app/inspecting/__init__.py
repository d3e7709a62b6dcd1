"""The Inspect tab: a trace viewer over the session log (filters, one session's replay, side by side)."""
