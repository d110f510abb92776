# CvT-21 at 384x384 on ImageNet-1k, started from the weights of cvt-21_8xb256_in1k-224px.py
# (microsoft/CvT experiments/imagenet/cvt/cvt-21-384x384.yaml: weight decay 0.1).
_base_ = ['./cvt-13_8xb128_in1k-384px.py']

model = dict(backbone=dict(arch='cvt-21'))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1))

load_from = 'work_dirs/cvt-21_8xb256_in1k-224px/epoch_300.pth'
