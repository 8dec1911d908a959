# The clean room server as a container image (see README "Operators").
#   docker build -t cleanroom .
#   docker run -v cleanroom-data:/var/lib/cleanroom -v /etc/cleanroom:/etc/cleanroom:ro \
#     -p 50051:50051 -p 127.0.0.1:9464:9464 cleanroom
# The configuration (mounted read-only) sets data_dir = "/var/lib/cleanroom" and, so that
# probes from outside the container reach it, [server.ops] listen = "0.0.0.0:9464".
FROM python:3.11-slim-bookworm AS build
# The matching kernel is a small C extension (setup.py): compiled here, with the image's
# Python headers; the final stage needs no compiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY cleanroom ./cleanroom
COPY partners ./partners
RUN python -m venv /opt/cleanroom \
 && /opt/cleanroom/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# A system user with no shell and no password; the data directory is its own, 0700.
RUN groupadd --system --gid 10001 cleanroom \
 && useradd --system --uid 10001 --gid cleanroom --home-dir /var/lib/cleanroom \
      --shell /usr/sbin/nologin cleanroom \
 && install -d -o cleanroom -g cleanroom -m 0700 /var/lib/cleanroom
COPY --from=build /opt/cleanroom /opt/cleanroom
ENV PATH=/opt/cleanroom/bin:$PATH \
    CLEANROOM_CONFIG=/etc/cleanroom/cleanroom.toml \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
VOLUME ["/var/lib/cleanroom"]
# 50051: gRPC with mutual TLS; 9464: the ops listener (/healthz, /readyz, /metrics).
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status != 200)"]
# SIGTERM drains running calls; `docker kill -s HUP` reloads the configuration.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cleanroom"]
CMD ["serve", "--log-format", "json"]
