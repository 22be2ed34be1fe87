"""``ecs-simulate``: federated experiments on Flower's local Simulation Runtime (one virtual
SuperNode per center of a generated cohort); see :mod:`simulations.federated.cli`."""
