"""Features: each optional part of a probe (the null, the holdout, --control, predictivity) as one module that owns its statistic, its result section, its run.json summary and its files."""
