"""P4Q: learnable prompts + a low-bit adapter that recover the accuracy of a quantized CLIP.

prompt_learner  CoOp-style context vectors and the text path that encodes them
adapter         QAdapter on the image feature
losses          CE + distillation against the FP teacher
features        the frozen towers' features, cached once per image and view
recipe          recipe checks (method, profile, class names, seeds)
prepare         what every seed shares: the model on its device, PTQ, zero-shot baselines
learner         prompts + adapter and the loss of one batch
schedule        optimizers, learning rates, data order
checkpoint      atomic per-epoch checkpoints, the run key
model_ref       which weights a run was trained from
outputs         RUN/metrics.json and RUN/run.json
trainer         the training loop of a seed and a run (resume, torchrun)
distributed     torchrun: sharding, gradient sums, gathered evaluation
run             loading a finished run (what export builds on)
"""
