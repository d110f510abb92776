# mmdeploy: an UperNet (or any mmseg segmentor) to ONNX for onnxruntime, giving the label
# map, with the settings of mmdeploy's configs/mmseg/segmentation_onnxruntime_dynamic.py.
# Used by: python tools/deployment/mmdeploy_export.py CONFIG CHECKPOINT OUT_DIR
_base_ = ['./_base_/onnxruntime_dynamic.py']

onnx_config = dict(
    output_names=['output'],
    dynamic_axes=dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        output={0: 'batch', 2: 'height', 3: 'width'}))
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=True)
