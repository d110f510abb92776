# CvT-13 at 384x384 on ImageNet-1k, started from the published 224x224 weights (microsoft/cvt-13
# = CvT-13-224x224-IN-1k.pth; from your own run of cvt-13_8xb256_in1k-224px.py instead:
# --cfg-options load_from=work_dirs/cvt-13_8xb256_in1k-224px/epoch_300.pth). Augmentation,
# optimiser and schedule follow
# microsoft/CvT experiments/imagenet/cvt/cvt-13-384x384.yaml (the 224 recipe at 384, same
# learning rate per image) with 128 images per GPU; test: resize to exactly 384x384, no crop.
# Shorten the run with --cfg-options train_cfg.max_epochs=30 (the cosine follows).
_base_ = ['./cvt-13_8xb256_in1k-224px.py']

load_from = 'https://huggingface.co/microsoft/cvt-13/resolve/main/pytorch_model.bin'

# The 224 pipeline with a 384 crop (BGR mean and std for the padding and erasing fills).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=384, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=[103.53, 116.28, 123.675],
        fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=384, backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

# 2.5e-4 per 256 images: 1e-3 for 8 x 128.
optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(base_batch_size=1024)
