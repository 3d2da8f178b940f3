"""The data plane: the lean HTTP/1.1 protocol on httptools (``dataplane``), the handlers it
routes to (``api``, ``streams``, ``live``), rendering and the Prometheus metrics.

May import: Twisted, Klein, prometheus_client, ``ursula.protocol``, ``ursula.stream`` (types
and commands only) and ``ursula.core`` through ``ICore``.
"""
