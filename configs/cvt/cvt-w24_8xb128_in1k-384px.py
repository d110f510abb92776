# CvT-W24 fine-tuned on ImageNet-1k at 384x384 from its ImageNet-22k weights
# (cvt-w24_8xb256_in21k-224px.py; the 21k-class head is left out), and the config to
# evaluate the official CvT-W24-384x384-IN-22k weights. microsoft/CvT
# experiments/imagenet/cvt/cvt-w24-384x384.yaml: 128 images and 1.25e-4 per GPU, weight
# decay 0.1, drop path 0.3 (the cvt-w24 preset's default).
_base_ = ['./cvt-13_8xb128_in1k-384px.py']

model = dict(
    backbone=dict(
        arch='cvt-w24',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/cvt-w24_8xb256_in21k-224px/epoch_90.pth')),
    head=dict(in_channels=1024))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1))

load_from = None
