"""Nova: lossless Binance spot + USDT-M perpetual order-book recorder and replayer."""

__version__ = "0.1.0"
