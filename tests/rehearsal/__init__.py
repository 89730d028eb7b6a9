"""Production rehearsal: run what we deploy (the ML image's task root, from its Dockerfile)."""
