"""Image features for the reward model and the worker processes that compute them."""
