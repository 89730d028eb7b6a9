"""The ML service's HTTP side: routes, the service token, request parsing."""
