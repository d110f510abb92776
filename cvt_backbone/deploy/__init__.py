"""Deployment: ONNX export of CvT models with a self-check against PyTorch (:mod:`.onnx`), and
whole detectors and segmentors through mmdeploy (:mod:`.mmdeploy_export`, with CvT's
rewrites in :mod:`.mmdeploy_rewrites`).

Not imported by ``import cvt_backbone``; it needs the ``deploy`` extra (onnx, onnxruntime,
onnxscript), and for mmdeploy the ``mmdeploy`` extra with mmdeploy itself, only when an
export runs.
"""
