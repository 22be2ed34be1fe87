"""Tools for hospitals and clinics that run a received model without the training stack.

``ecs-evaluate`` (:mod:`clinic.evaluate_cli`): a hospital validates a model bundle on its own
labelled DICOM folder. ``ecs-screen`` (:mod:`clinic.screen_cli`): a clinic screens images.
Both run on ONNX Runtime, numpy, scipy and pydicom (the ``clinic`` install extra): this package
never imports torch, Flower or Ray (an import-linter contract and a test in a torch-free
environment check it). Images get the training preprocessing through the same code
(:mod:`client.data`, :mod:`ecs_models.inputs`), driven by the bundle's recorded recipe.
"""
