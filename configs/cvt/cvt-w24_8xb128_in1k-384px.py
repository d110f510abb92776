# CvT-W24 on ImageNet-1k at 384x384 (microsoft/CvT experiments/imagenet/cvt/cvt-w24-384x384.yaml:
# 128 images and 1.25e-4 per GPU, weight decay 0.1, drop path 0.3, the cvt-w24 preset's
# default). It starts from the published CvT-w24-384x384-IN-22k weights (microsoft/
# cvt-w24-384-22k: ImageNet-22k pre-training, ImageNet-1k fine-tuning at 384), which
# tools/test.py evaluates as they are. To fine-tune from your own ImageNet-22k run of
# cvt-w24_8xb256_in21k-224px.py instead (its 21k-class head is left out):
#   --cfg-options load_from=None \
#   model.backbone.init_cfg.type=Pretrained \
#   model.backbone.init_cfg.checkpoint=work_dirs/cvt-w24_8xb256_in21k-224px/epoch_90.pth
_base_ = ['./cvt-13_8xb128_in1k-384px.py']

model = dict(backbone=dict(arch='cvt-w24'), head=dict(in_channels=1024))

optim_wrapper = dict(optimizer=dict(weight_decay=0.1))

load_from = 'https://huggingface.co/microsoft/cvt-w24-384-22k/resolve/main/pytorch_model.bin'
