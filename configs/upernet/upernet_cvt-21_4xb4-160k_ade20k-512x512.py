# UperNet with a CvT-21 backbone on ADE20K, 160k iterations at 512x512, 4 GPUs x 4 images.
_base_ = './upernet_cvt-13_4xb4-160k_ade20k-512x512.py'

# The published ImageNet-1k weights (microsoft/cvt-21 = CvT-21-224x224-IN-1k.pth).
pretrained = 'https://huggingface.co/microsoft/cvt-21/resolve/main/pytorch_model.bin'
model = dict(
    backbone=dict(arch='cvt-21', init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
