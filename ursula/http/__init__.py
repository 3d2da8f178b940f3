"""The HTTP front end: the Klein application, live readers (long-poll, SSE), metrics, the site.

May import: Twisted, Klein, prometheus_client, ``ursula.protocol``, ``ursula.stream`` (types
and commands only) and ``ursula.core`` through ``ICore``.
"""
