"""AWS Lambda entry points of the gateway: only the handlers (see ``gateway/serverless.py``).

``http`` serves function-URL events; ``worker`` drains the job queue on a schedule; ``migrate``
applies migrations as a deploy step.
"""

from mangum import Mangum

from gateway.app import app_from_environment
from gateway.serverless import WORKER_SERVICE, Migrator, ScheduledWorker
from shared.aws.lambda_entry import lambda_entry, use_lambda_log_format
from shared.settings import get_settings

SERVICE = "latina-gateway"
settings = get_settings()
app = app_from_environment(lazy=True)
on_lambda = settings.aws_lambda_function_name is not None
if on_lambda:
    use_lambda_log_format(SERVICE)

http = lambda_entry(Mangum(app, lifespan="off"), on_lambda=on_lambda, service=SERVICE)
worker = lambda_entry(ScheduledWorker(settings), on_lambda=on_lambda, service=WORKER_SERVICE)
migrate = lambda_entry(Migrator(settings), on_lambda=on_lambda, service="latina-migrate")
