# syntax=docker/dockerfile:1
# faxrelay's production image. It runs the web app by default; compose.yaml runs the worker and beat
# from the same image with other commands. It carries no embedded servers and no development tools:
# only the dependencies pinned in requirements.lock and faxrelay itself.
#   docker build -t faxrelay .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a venv with the locked dependencies, then faxrelay's wheel --------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/faxrelay
# The dependencies come from the lock file alone (hashes checked), so this layer is rebuilt only
# when requirements.lock changes, not for every change to the code.
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/faxrelay/bin/pip install --require-hashes -r /tmp/requirements.lock
COPY pyproject.toml /src/
COPY config /src/config
COPY worker /src/worker
COPY webhooks /src/webhooks
COPY sandbox /src/sandbox
# faxrelay itself as a wheel, without dependencies (the lock has them all); `pip check` fails the
# build if the lock no longer satisfies pyproject.toml.
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/faxrelay/bin/pip wheel --no-deps --wheel-dir /tmp/dist /src \
    && /opt/faxrelay/bin/pip install --no-deps /tmp/dist/faxrelay-*.whl \
    && /opt/faxrelay/bin/pip check

# --- runtime: the venv, a non-root user, nothing else ---------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/faxrelay/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FAXRELAY_STATE_DIR=/var/lib/faxrelay
RUN groupadd --system --gid 10001 faxrelay \
    && useradd --system --uid 10001 --gid faxrelay --home-dir /var/lib/faxrelay \
       --shell /usr/sbin/nologin faxrelay \
    && install -d -o faxrelay -g faxrelay -m 0750 /var/lib/faxrelay
COPY --from=builder /opt/faxrelay /opt/faxrelay
USER faxrelay:faxrelay
WORKDIR /var/lib/faxrelay
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["uvicorn", "--factory", "webhooks.app:create_app", "--host", "0.0.0.0", "--port", "8000", "--no-proxy-headers"]
