"""Federated strategies: Flower's ``flwr.serverapp.strategy`` classes, configured by name
(:mod:`strategies.factory`) and wrapped (:mod:`strategies.wrapper`) with what they lack:
held-out-aware node selection, reply validation, per-center metrics, checkpoint hooks; plus the
client-side halves of FedProx (:mod:`strategies.fedprox`) and FedBN (:mod:`strategies.fedbn`).

Importing this package imports flwr; the client-side modules (``fedprox``, ``fedbn``) do not.
"""
