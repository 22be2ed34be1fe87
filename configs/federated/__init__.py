"""Hydra root of the federated apps (``ecs-simulate`` and the ServerApp): simulate.yaml and its
federated experiments; shared groups (cohort, model, training, gan, paths, strategy, federation)
come from the parent ``configs`` package through ``hydra.searchpath``."""
