# CvT in an mmdet config: mmdet's ResNet-50 Mask R-CNN recipe with a CvT-13 backbone.
# CvT has three stages (strides 4, 8, 16), so the FPN takes three inputs and builds P5 and P6
# with strided convolutions on the stride-16 map.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['cvt_backbone'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='CvT', arch='cvt-13', out_indices=(0, 1, 2),
                  init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/'
                                'microsoft/cvt-13/resolve/main/pytorch_model.bin')),
    neck=dict(in_channels=[64, 192, 384], add_extra_convs='on_input', num_outs=5))
