"""Nova's simulated Binance venue: a local server speaking Binance's market-data wire protocol.

In-process use (tests, notebooks)::

    from nova.venue import SyntheticSource, Venue
    async with Venue(SyntheticSource(symbols, seed=7)) as venue:
        print(venue.url)          # http://127.0.0.1:PORT

From a shell: ``nova venue --port 0`` prints the same URL as its first line of output.
"""

from nova.venue.capture import CaptureSource, read_capture
from nova.venue.server import Venue, VenueConfig
from nova.venue.source import FeedSource
from nova.venue.synthetic import SyntheticSource

__all__ = ["CaptureSource", "FeedSource", "SyntheticSource", "Venue", "VenueConfig", "read_capture"]
