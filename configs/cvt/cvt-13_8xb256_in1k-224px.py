# CvT-13 trained from scratch on ImageNet-1k at 224x224 with the official recipe
# (microsoft/CvT experiments/imagenet/cvt/cvt-13-224x224.yaml): 8 GPUs x 256 images,
# AdamW 2.5e-4 per 256 images, 300 epochs, RandAugment, random erasing, Mixup/CutMix.
# The inherited Swin data pipeline already is the official one: bicubic RandomResizedCrop,
# RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 with per-pixel normal noise
# (timm's 'pixel' mode), test resize of the short side to 256 and center crop 224.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/cvt_runtime.py',
    '../_base_/cvt_paramwise.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(type='CvT', arch='cvt-13', out_type='cls_token'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        # Official: weight trunc_normal(std=0.02), bias PyTorch's default uniform; mmengine
        # initialisers always set the bias to a constant, here 0.
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# cvt-backbone's seeded training data (configs/_base_/cvt_runtime.py).
train_dataloader = dict(
    batch_size=256,
    sampler=dict(type='SeededDefaultSampler'),
    dataset=dict(_delete_=True, type='SeededDataset', dataset={{_base_.train_dataloader.dataset}}))

optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.05),
                     paramwise_cfg={{_base_.cvt_paramwise_cfg}})

# 5 warm-up epochs from 1e-6, then cosine to 1e-5 (the official timm scheduler steps once
# per epoch; here both step per iteration).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 2e-3, by_epoch=True, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),
]

# The official code scales the learning rate with the number of GPUs (SCALE_LR): so does
# this, from 2e-3 at 2048 images per iteration.
auto_scale_lr = dict(base_batch_size=2048, enable=True)

default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', max_keep_ckpts=3))
