"""Nova's offline side: replay recorded books through the spread logic, at the recorded pace or at full speed.

``Replay`` (replay.api) is the entry point for Python; ``nova replay`` is the same thing from a shell.
``export_snapshots`` (replay.snapshots) samples the same books on a time grid; ``nova export snapshots``.
"""

from nova.core.spread import Reading
from replay.api import Event, Progress, Replay
from replay.snapshots import SnapshotExport, SnapshotSummary, export_snapshots
from replay.summary import ReplaySummary

__all__ = ["Event", "Progress", "Reading", "Replay", "ReplaySummary", "SnapshotExport", "SnapshotSummary",
           "export_snapshots"]
