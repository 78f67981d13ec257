"""The flows of DESIGN.md section 5, one module each, generic over channels.

Each module registers its flow with ``hub.jobs.register_flow`` when imported;
``hub.jobs.load_builtin_flows()`` imports every module of this package. A flow is a function of a
``FlowContext``: it reads the account and catalogue from the database, talks to the channel through
``hub.connections.open_channel``, and reports per-item outcomes and events. See docs/flows-*.md.
"""
