"""Client side of every fedsim algorithm (Flower ClientApp handlers).

Each module holds one algorithm's client half; :mod:`fedsim.algorithms` registers it
together with the server half and the parameters.
"""
