"""What deployment needs of the package: CvT's rewrites for mmdeploy's ONNX export
(:mod:`.mmdeploy_rewrites`, imported by ``tools/deployment/mmdeploy_export.py``; it needs
mmdeploy). The export and check tools themselves live in ``tools/deployment/``.
"""
