# CvT-21 pre-trained on ImageNet-22k at 224x224: cvt-13_8xb256_in21k-224px.py with the
# CvT-21 weight decay 0.1.
_base_ = ['./cvt-13_8xb256_in21k-224px.py']

model = dict(backbone=dict(arch='cvt-21'))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1))
