"""earnings-sync: keep the AlphaVantage earnings calendar in DynamoDB, conflict-safe."""

__version__ = "0.1.0"
