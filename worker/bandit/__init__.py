"""The coaching bandit: context features, in-memory LinUCB and its Redis-shared twin."""
