# Mask R-CNN with a CvT-21 backbone on COCO, 1x schedule.
_base_ = './mask-rcnn_cvt-13_fpn_1x_coco.py'

# The published ImageNet-1k weights (microsoft/cvt-21 = CvT-21-224x224-IN-1k.pth).
pretrained = 'https://huggingface.co/microsoft/cvt-21/resolve/main/pytorch_model.bin'
model = dict(
    backbone=dict(arch='cvt-21', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
