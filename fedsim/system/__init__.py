"""The system model: device and network profiles, availability, virtual clock, energy.

See DESIGN.md, "The system model". Absent from a scenario (no ``system:`` section),
none of it runs.
"""
