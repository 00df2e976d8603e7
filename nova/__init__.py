"""Nova: lossless Binance spot + USDT-M perpetual order-book recorder and replayer.

The house has three floors (docs/architecture.md): the core (``nova.core``: the data contract, the dataset, symbol
naming, the book, the spread logic, the validity rule) imports no side; the sides (``recorder``, ``replay``,
``nova.analysis``, ``nova.venue``) import only the core; the roof is the command line (``nova.cli``) and this
module, the public Python API in one place::

    from nova import Replay, Recorder, RecorderConfig, Dataset, Symbol

Names are loaded on first use, so importing the core (``nova.core.book``, say) never drags in a side.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # the core
    "Dataset": "nova.core.dataset",
    "NovaError": "nova.core.errors",
    "Symbol": "nova.core.markets",
    "SpreadParams": "nova.core.spread",
    "Reading": "nova.core.spread",
    "L2Book": "nova.core.book",
    # the sides
    "Recorder": "recorder.recorder",
    "RecorderConfig": "recorder.recorder",
    "Replay": "replay.api",
    "ReplaySummary": "replay.summary",
    "Piece": "replay.pieces",
    "PieceOptions": "replay.pieces",
    "run_pieces": "replay.pieces",
    "scan": "replay.scan",
    "Venue": "nova.venue.server",
    "VenueConfig": "nova.venue.server",
    "SyntheticSource": "nova.venue.synthetic",
    "CaptureSource": "nova.venue.capture",
}
__all__ = ["CaptureSource", "Dataset", "L2Book", "NovaError", "Piece", "PieceOptions", "Reading", "Recorder",
           "RecorderConfig", "Replay", "ReplaySummary", "SpreadParams", "Symbol", "SyntheticSource", "Venue",
           "VenueConfig", "run_pieces", "scan"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from nova.core.book import L2Book
    from nova.core.dataset import Dataset
    from nova.core.errors import NovaError
    from nova.core.markets import Symbol
    from nova.core.spread import Reading, SpreadParams
    from nova.venue.capture import CaptureSource
    from nova.venue.server import Venue, VenueConfig
    from nova.venue.synthetic import SyntheticSource
    from recorder.recorder import Recorder, RecorderConfig
    from replay.api import Replay
    from replay.pieces import Piece, PieceOptions, run_pieces
    from replay.scan import scan
    from replay.summary import ReplaySummary



def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nova' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
