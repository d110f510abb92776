# Mask R-CNN with a CvT-21 backbone on COCO, 1x schedule.
_base_ = './mask-rcnn_cvt-13_fpn_1x_coco.py'

pretrained = 'checkpoints/cvt-21_in1k-224px_backbone.pth'
model = dict(
    backbone=dict(arch='cvt-21', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
