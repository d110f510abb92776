# CvT-21 at 384x384 on ImageNet-1k, started from the published 224x224 weights (microsoft/cvt-21;
# or your run of cvt-21_8xb256_in1k-224px.py), as cvt-21-384x384.yaml: weight decay 0.1.
_base_ = ['./cvt-13_8xb128_in1k-384px.py']

model = dict(backbone=dict(arch='cvt-21'))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1))

load_from = 'https://huggingface.co/microsoft/cvt-21/resolve/main/pytorch_model.bin'
