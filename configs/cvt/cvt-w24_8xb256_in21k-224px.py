# CvT-W24 (277M parameters) pre-trained on ImageNet-22k at 224x224:
# cvt-13_8xb256_in21k-224px.py with the W24 weight decay 0.1 and drop path 0.3.
_base_ = ['./cvt-13_8xb256_in21k-224px.py']

custom_imports = dict(imports=['cvt_backbone'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='cvt-w24', drop_path_rate=0.3),
    head=dict(in_channels=1024))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1))
