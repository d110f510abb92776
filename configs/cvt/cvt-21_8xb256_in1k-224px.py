# CvT-21 from scratch on ImageNet-1k at 224x224: the CvT-13 recipe with weight decay 0.1
# (paper, and microsoft/CvT experiments/imagenet/cvt/cvt-21-224x224.yaml, which states the
# same learning rate per image as 128 images x 1.25e-4 per GPU).
_base_ = ['./cvt-13_8xb256_in1k-224px.py']

model = dict(backbone=dict(arch='cvt-21'))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1))
