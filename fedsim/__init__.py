"""fedsim: federated learning and edge split computing simulator."""

__version__ = "0.1.0"
