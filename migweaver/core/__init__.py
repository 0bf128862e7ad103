"""Pure decisions: catalog, geometry, request parsing, configuration, resource models.

Nothing here does I/O or imports kopf, kubernetes_asyncio, pynvml, prometheus_client,
structlog or grpc (enforced by import-linter).
"""
