"""The run directory: what a run writes and reads back, and its claim and integrity."""
