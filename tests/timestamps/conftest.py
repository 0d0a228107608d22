from tests.timestamps.tsa import authority

__all__ = ["authority"]
