"""The ground floor: what every side shares and nothing else.

The data contract (``contract``), the dataset that owns a root's layout and I/O (``dataset``, ``lock``), symbol and
market naming (``markets``), the L2 book (``book``), the spread logic (``spread``), the rule of when a recorded
market can be trusted (``validity``), human units (``units``) and the one error type (``errors``). It imports
no side (recorder, replay, analysis, venue) and no roof (the CLI): the import contracts in pyproject.toml, checked
by CI, hold it to that.
"""
