"""Competition definitions and the schedule."""
