"""AWS Lambda entry point: only the Mangum handler (resources open lazily, see resources.py)."""

from mangum import Mangum

from ml_service.app import SERVICE, app_from_environment, on_lambda
from shared.aws.lambda_entry import lambda_entry

app = app_from_environment()
handler = lambda_entry(Mangum(app, lifespan="off"), on_lambda=on_lambda(), service=SERVICE)
