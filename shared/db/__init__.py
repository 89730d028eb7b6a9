"""PostgreSQL access shared by both services: pool, migrations, embedded server."""
