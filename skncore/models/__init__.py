"""Loading a causal LM and finding its FFN neurons: sources, formats, checks, fingerprints, placement."""
