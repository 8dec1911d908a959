"""Running the server in production: logs, metrics, probes, deployment checks and backups.

Modules here stand between the service and the use cases: they may import
`cleanroom.usecases` and everything below it (audit, storage, privacy, tls, config),
never `cleanroom.service` nor gRPC, and this `__init__` imports nothing.
"""
