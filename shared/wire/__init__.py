"""Wire schemas shared by the gateway (client) and the services (server)."""
