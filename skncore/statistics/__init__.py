"""What the probe pass streams: one protocol, the Pearson moments, the folds, the null, the covariates."""
