# UperNet with a CvT-13 backbone on ADE20K, 160k iterations at 512x512, 4 GPUs x 4 images
# (mmseg's Swin-T UperNet recipe with CvT in: AdamW lr 6e-5, weight decay 0.01, poly).
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    '../_base_/cvt_runtime.py', '../_base_/cvt_paramwise.py'
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
    decode_head=dict(in_channels=[64, 192, 384], in_index=[0, 1, 2]),
    # Deep supervision on the penultimate stage (stride 8), as UperNet puts it on the
    # stage before the last for ResNet and Swin; CvT's last stage is already the decode
    # head's deepest input.
    auxiliary_head=dict(in_channels=192, in_index=1))

optim_wrapper = dict(paramwise_cfg={{_base_.cvt_paramwise_cfg}})

# cvt-backbone's checkpoint hook and seeded training data (configs/_base_/cvt_runtime.py).
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
train_dataloader = dict(
    batch_size=4,
    sampler=dict(type='SeededInfiniteSampler'),
    dataset=dict(_delete_=True, type='SeededDataset', dataset={{_base_.train_dataloader.dataset}}))
