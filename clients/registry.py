"""The algorithm registry (client side): name -> handlers for each message type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import Context, Message

from fedsim.registry import Registry

Handler = Callable[[Message, Context], Message]


@dataclass(frozen=True)
class ClientAlgorithm:
    """The client half of an algorithm: what it does on a train and an evaluate message."""

    train: Handler
    evaluate: Handler


CLIENT_ALGORITHMS: Registry[ClientAlgorithm] = Registry("client algorithm")
