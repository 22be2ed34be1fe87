"""Training code shared by centralized runs and federated hospital clients (plain PyTorch, no flwr).

Modules: ``metrics`` (screening metrics, operating point, checkpoint rule), ``distill`` (teacher +
LSNet gradient distillation, stages A and B), ``gan`` (SG-CycleGAN training and synthesis),
``synthesis_metrics`` (synthesis quality on the paired renders).
"""
