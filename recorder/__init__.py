"""The live side of Nova: ccxt.pro capture hooks, stream supervisors, the Parquet writer, live status."""
