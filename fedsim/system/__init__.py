"""The system model: device and network profiles, availability, virtual clock, energy.

See docs/system.md. Absent from a scenario (no ``system:`` section),
none of it runs.
"""
