"""The offline analysis tools: `nova sql`, `nova check` and `nova compact`."""
