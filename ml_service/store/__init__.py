"""The ML service's data access: every SQL statement of the service (schema ``ml``)."""
