"""P4Q: learnable prompts + a low-bit adapter that recover the accuracy of a quantized CLIP.

prompt_learner  CoOp-style context vectors and the text path that encodes them
adapter         QAdapter on the image feature
losses          CE + distillation against the FP teacher
features        the frozen towers' features, cached once per image and view
trainer         the training loop (checkpoints, resume, torchrun)
run             loading a finished run (what export builds on)
"""
