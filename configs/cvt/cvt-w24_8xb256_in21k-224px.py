# CvT-W24 (277M parameters) pre-trained on ImageNet-22k at 224x224:
# cvt-13_8xb256_in21k-224px.py with the W24 weight decay 0.1 (drop path 0.3 is the cvt-w24
# preset's default).
_base_ = ['./cvt-13_8xb256_in21k-224px.py']

model = dict(
    backbone=dict(arch='cvt-w24'),
    head=dict(in_channels=1024))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1))
