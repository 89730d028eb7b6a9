"""The browser side of the gateway: pages, static assets, sessions and their protections."""
