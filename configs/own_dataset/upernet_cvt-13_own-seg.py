# UperNet with CvT-13 on a segmentation dataset of your own (docs/own_dataset.md): the ADE20K
# config with your classes and palette, your number of classes in both heads, and your
# folders. Each image has a label map of the same name (PNG), whose pixel values are class
# indices: 0 is the first class of metainfo.classes (here the background), 255 is ignored.
_base_ = '../upernet/upernet_cvt-13_4xb4-160k_ade20k-512x512.py'

data_root = 'data/my_seg'
metainfo = dict(classes=('background', 'cat', 'dog', 'fox'),
                palette=[[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]])
num_classes = 4

model = dict(decode_head=dict(num_classes=num_classes),
             auxiliary_head=dict(num_classes=num_classes))

crop_size = (512, 512)
# ADE20K's pipelines, with the label maps read as they are (ADE20K's 0 means "unlabeled").
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
               img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False)
train_dataloader = dict(
    dataset=dict(dataset=dict(_delete_=True, **dataset, pipeline=train_pipeline,
                              data_prefix=dict(img_path='images/train',
                                               seg_map_path='annotations/train'))))
val_dataloader = dict(
    dataset=dict(_delete_=True, **dataset, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/val', seg_map_path='annotations/val')))
test_dataloader = val_dataloader
