# Classification pretraining of a small CvT on generated shapes (64x64, 3 classes,
# 6000 training images). Runs on a CPU in minutes.
_base_ = [
    'mmpretrain::_base_/default_runtime.py', '../_base_/cvt_runtime.py',
    '../_base_/cvt_paramwise.py', './_base_/cvt_tiny.py', './_base_/shapes.py'
]

model = dict(
    type='ImageClassifier',
    # PyTorch's default Linear init (Kaiming-uniform, a=sqrt(5)) instead of the official
    # truncated normal (std 0.02), which starts too small at 32-128 channels for a short
    # schedule.
    backbone=dict(type='CvT', arch={{_base_.cvt_tiny}}, kv_strides={{_base_.cvt_tiny_kv_strides}},
                  out_type='cls_token',
                  init_cfg=dict(type='Kaiming', layer='Linear', a=5**0.5, mode='fan_in',
                                nonlinearity='leaky_relu', distribution='uniform')),
    head=dict(
        type='LinearClsHead',
        num_classes=3,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 2)))

data_preprocessor = dict(
    num_classes=3,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

data_root = 'data/shapes_cls'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='SeededDefaultSampler', shuffle=True),
    dataset=dict(
        type='SeededDataset',
        dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                     pipeline=train_pipeline)))
val_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val',
                 pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 2))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05),
    paramwise_cfg={{_base_.cvt_paramwise_cfg}},
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1),
]
# 12 epochs: after 8 the top-1 of seeds 0 and 1 was 98.0 and 96.3 %, too close to the
# demo's 95 % target.
train_cfg = dict(by_epoch=True, max_epochs=12, val_interval=4)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='SafeCheckpointHook', interval=4, max_keep_ckpts=2,
                    save_best='auto'))
randomness = dict(seed=0, deterministic=False)
