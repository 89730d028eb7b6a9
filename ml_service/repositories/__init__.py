"""The ML service's data access (schema ``ml``): every SQL statement of the service."""
