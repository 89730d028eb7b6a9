# The ML service as a Lambda container image: AWS's Lambda Python base image with CPU-only
# PyTorch (no CUDA libraries: the image stays ~1 GB instead of several).
#
#   make ml-image     (docker build -f infra/Dockerfile.ml -t latina-ml:<commit> .)
#   then push to ECR and deploy by digest: make deploy ML_IMAGE=<repo>@sha256:<digest>
ARG PYTHON_VERSION=3.12
FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}

# PyTorch's CPU wheels live on PyTorch's own index; everything else comes from PyPI. The "+cpu"
# pin in requirements-ml.txt means a CUDA build can never satisfy it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY infra/requirements-ml.txt /tmp/requirements-ml.txt
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" \
        --target "${LAMBDA_TASK_ROOT}" -r /tmp/requirements-ml.txt \
    && rm /tmp/requirements-ml.txt

COPY shared/ ${LAMBDA_TASK_ROOT}/shared/
COPY ml_service/ ${LAMBDA_TASK_ROOT}/ml_service/
COPY infra/migrations/ ${LAMBDA_TASK_ROOT}/infra/migrations/

# Compile once at build time, so a cold start does not.
RUN python -m compileall -q "${LAMBDA_TASK_ROOT}/shared" "${LAMBDA_TASK_ROOT}/ml_service"

CMD ["ml_service.handler.handler"]
