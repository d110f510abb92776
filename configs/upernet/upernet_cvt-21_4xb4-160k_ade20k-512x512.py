# UperNet with a CvT-21 backbone on ADE20K, 160k iterations at 512x512, 4 GPUs x 4 images.
_base_ = './upernet_cvt-13_4xb4-160k_ade20k-512x512.py'

pretrained = 'checkpoints/cvt-21_in1k-224px_backbone.pth'
model = dict(
    backbone=dict(arch='cvt-21', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
