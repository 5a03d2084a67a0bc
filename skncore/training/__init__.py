"""Training the soft prompt on the frozen model: the prompt, the step's forward, the caches."""
