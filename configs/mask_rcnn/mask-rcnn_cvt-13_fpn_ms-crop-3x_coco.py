# Mask R-CNN with a CvT-13 backbone on COCO, 3x schedule with multi-scale + crop augmentation
# (mmdet's Swin-T ms-crop-3x recipe with CvT in; the model part as in the 1x config).
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', '../_base_/cvt_runtime.py',
    '../_base_/cvt_paramwise.py'
]

pretrained = 'https://huggingface.co/microsoft/cvt-13/resolve/main/pytorch_model.bin'

model = dict(
    backbone=dict(
        _delete_=True,
        type='CvT',
        arch='cvt-13',
        out_indices=(0, 1, 2),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 192, 384], add_extra_convs='on_input', num_outs=5))

# As the 1x config: the rate is for 16 images per iteration; --auto-scale-lr scales it.
optim_wrapper = dict(paramwise_cfg={{_base_.cvt_paramwise_cfg}})

# cvt-backbone's checkpoint hook and seeded training data (configs/_base_/cvt_runtime.py).
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
train_dataloader = dict(
    sampler=dict(type='SeededDefaultSampler'),
    dataset=dict(_delete_=True, type='SeededDataset', dataset={{_base_.train_dataloader.dataset}}))
