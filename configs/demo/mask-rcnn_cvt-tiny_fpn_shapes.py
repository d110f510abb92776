# Mask R-CNN with the small demo CvT on generated shapes (128x128 scenes, 3 classes).
# The model is the COCO config's, narrowed to the small backbone; the backbone starts from
# the classification demo's weights (tools/demo/run_demo.py makes them). The schedule and
# the sampling were chosen by measurement on a 2-core CPU (docs/notes.md).
_base_ = [
    '../mask_rcnn/mask-rcnn_cvt-13_fpn_1x_coco.py', './_base_/cvt_tiny.py', './_base_/shapes.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='CvT',
        arch={{_base_.cvt_tiny}},
        kv_strides={{_base_.cvt_tiny_kv_strides}},
        out_indices=(0, 1, 2),
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/demo/cls_backbone.pth')),
    neck=dict(in_channels=[32, 64, 128], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        # One bilinear sample per RoI bin: mmcv's CPU RoIAlign backward was a third of
        # each step with adaptive sampling.
        bbox_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=1)),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=1)),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=3)),
    # A 128x128 scene holds at most 4 shapes: 100 proposals and 64 sampled RoIs per image.
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=100),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)))

data_root = 'data/shapes/'
metainfo = dict(classes={{_base_.shapes_classes}}, palette={{_base_.shapes_palette}})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Batch 4: on the CPU a step costs about as much per image at any batch size, so smaller
# batches give more updates in the same time.
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(dataset=dict(data_root=data_root, metainfo=metainfo,
                              ann_file='annotations/instances_train.json',
                              data_prefix=dict(img='images/train/'), pipeline=train_pipeline)))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
