# Mask R-CNN with a CvT-13 backbone on COCO, 1x schedule: mmdet's Swin-T recipe with CvT in.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', '../_base_/cvt_runtime.py',
    '../_base_/cvt_paramwise.py'
]

# The published ImageNet-1k weights (microsoft/cvt-13 = CvT-13-224x224-IN-1k.pth), downloaded
# once into the torch hub cache. Offline: a local copy of either file works the same.
pretrained = 'https://huggingface.co/microsoft/cvt-13/resolve/main/pytorch_model.bin'

model = dict(
    backbone=dict(
        _delete_=True,
        type='CvT',
        arch='cvt-13',
        out_indices=(0, 1, 2),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # CvT has three stages (strides 4, 8, 16): FPN adds P5 and P6 with strided convs on the
    # stride-16 map, so the RPN anchors (strides 4..64) and RoI extractors (4..32) still fit.
    neck=dict(in_channels=[64, 192, 384], add_extra_convs='on_input', num_outs=5))

# AdamW as for Swin, without weight decay on norms, biases and the class token. The rate is the
# Swin recipe's for 16 images per iteration (8 GPUs x 2): mmdet's auto_scale_lr stays off as in
# its recipes; on another number of GPUs, tools/train.py --auto-scale-lr scales it.
optim_wrapper = dict(paramwise_cfg={{_base_.cvt_paramwise_cfg}})

# cvt-backbone's checkpoint hook and seeded training data (configs/_base_/cvt_runtime.py).
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
train_dataloader = dict(
    sampler=dict(type='SeededDefaultSampler'),
    dataset=dict(_delete_=True, type='SeededDataset', dataset={{_base_.train_dataloader.dataset}}))
