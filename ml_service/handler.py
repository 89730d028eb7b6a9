"""AWS Lambda entry point: only the Mangum handler (see ``ml_service.resources``)."""

from mangum import Mangum

from ml_service.app import app_from_environment

handler = Mangum(app_from_environment(), lifespan="off")
