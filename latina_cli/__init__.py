"""The ``latina`` command: composes the gateway's and the ML service's command lines."""
