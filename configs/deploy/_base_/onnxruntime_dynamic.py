# What the deploy configs beside it share: the whole model to ONNX (opset 17: CvT needs 13
# or later) for onnxruntime, with dynamic batch, height and width. mmdeploy's own configs
# (configs/_base_/onnx_config.py and friends in its repository) are not part of its wheel.
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=17,
    save_file='end2end.onnx',
    input_names=['input'],
    input_shape=None,
    optimize=True)
backend_config = dict(type='onnxruntime')
