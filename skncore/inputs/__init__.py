"""The examples and their metric: reading data, the sequence layout, the pass order, the metric."""
