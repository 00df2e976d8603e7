"""The offline analysis side: ``nova sql`` (views, macros, output), ``nova check``, ``nova ls`` and ``nova compact``.

It imports only the core (``nova.core``).
"""
