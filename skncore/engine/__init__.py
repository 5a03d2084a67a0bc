"""A run from request to result: configs, checks, the pass, devices and processes, the orchestrators."""
