"""Deployment: ONNX export of CvT models with a self-check against PyTorch (:mod:`.onnx`).

Not imported by ``import cvt_backbone``; it needs the ``deploy`` extra (onnx, onnxruntime,
onnxscript) only when an export runs.
"""
