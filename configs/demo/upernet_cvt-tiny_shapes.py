# UperNet with the small demo CvT on generated shapes (128x128, background + 3 classes).
# The model is the ADE20K config's, narrowed to the small backbone; the backbone starts from
# the demo detector's backbone weights (tools/demo/run_demo.py makes them).
_base_ = [
    '../upernet/upernet_cvt-13_4xb4-160k_ade20k-512x512.py', './_base_/cvt_tiny.py',
    './_base_/shapes.py'
]

crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
# Pixel shares are 84 % background and 7 / 5 / 4 % circle / square / triangle; weighting the
# classes by about 1 / sqrt(share) stops the head from painting every shape the commonest
# class.
class_weight = [1.0, 3.5, 4.0, 4.7]
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='CvT',
        arch={{_base_.cvt_tiny}},
        kv_strides={{_base_.cvt_tiny_kv_strides}},
        out_indices=(0, 1, 2),
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/demo/mask_rcnn_backbone.pth')),
    # 128 head channels: telling the shapes apart pixel by pixel is the hard part here.
    decode_head=dict(in_channels=[32, 64, 128], channels=128, num_classes=4, norm_cfg=norm_cfg,
                     loss_decode=dict(class_weight=class_weight)),
    auxiliary_head=dict(in_channels=64, channels=32, num_classes=4, norm_cfg=norm_cfg,
                        loss_decode=dict(class_weight=class_weight)))

dataset = dict(
    type='BaseSegDataset',
    data_root='data/shapes',
    metainfo=dict(classes={{_base_.shapes_seg_classes}}, palette={{_base_.shapes_seg_palette}}),
    img_suffix='.png',
    seg_map_suffix='.png',
    reduce_zero_label=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(dataset=dict(_delete_=True, **dataset, pipeline=train_pipeline,
                              data_prefix=dict(img_path='images/train',
                                               seg_map_path='masks/train'))))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(_delete_=True, **dataset, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/val', seg_map_path='masks/val')))
test_dataloader = val_dataloader

# 1000 iterations: after 500 the head still underfits the training scenes.
max_iters = 1000
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=max_iters, by_epoch=False),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
# Half-transparent label colours in the drawn predictions, so the image shows through the
# (black) background class.
visualizer = dict(alpha=0.5)
