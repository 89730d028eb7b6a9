"""What both services need on AWS: secrets from SSM, Lambda entry wrappers, SigV4 signing."""
