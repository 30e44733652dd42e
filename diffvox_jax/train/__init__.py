"""Training: the train state, optimizer, pure train step, data-parallel execution, checkpoints and the loop.

Modules, in the order data flows through them: `optimizer` (AdamW + schedule), `state` (`TrainState`),
`step` (the pure per-device `train_step`), `parallel` (mesh, sharded multi-step dispatch, multi-host batches),
`checkpoint` (orbax manager with exact resume, inference export), `loop` (`train_and_evaluate`).
"""
