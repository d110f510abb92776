# mmdeploy: a Mask R-CNN (or any mmdet instance segmentor) to ONNX for onnxruntime, with the
# settings of mmdeploy's configs/mmdet/instance-seg/instance-seg_onnxruntime_dynamic.py.
# Used by: python tools/deployment/mmdeploy_export.py CONFIG CHECKPOINT OUT_DIR
_base_ = ['./_base_/onnxruntime_dynamic.py']

onnx_config = dict(
    output_names=['dets', 'labels', 'masks'],
    dynamic_axes=dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        dets={0: 'batch', 1: 'num_dets'},
        labels={0: 'batch', 1: 'num_dets'},
        masks={0: 'batch', 1: 'num_dets', 2: 'height', 3: 'width'}))
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    post_processing=dict(
        score_threshold=0.05,
        confidence_threshold=0.005,
        iou_threshold=0.5,
        max_output_boxes_per_class=200,
        pre_top_k=5000,
        keep_top_k=100,
        background_label_id=-1,
        export_postprocess_mask=False))
