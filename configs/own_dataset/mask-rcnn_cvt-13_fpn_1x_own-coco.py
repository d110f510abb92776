# Mask R-CNN with CvT-13 on a dataset of your own in COCO format (docs/own_dataset.md):
# the COCO 1x config with your class names, your number of classes in both heads, and your
# folders. Images are listed in the annotation files; only the categories named in
# metainfo.classes are used, in that order.
_base_ = '../mask_rcnn/mask-rcnn_cvt-13_fpn_1x_coco.py'

data_root = 'data/my_coco/'
metainfo = dict(classes=('cat', 'dog', 'fox'))
num_classes = 3

model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=num_classes), mask_head=dict(num_classes=num_classes)))

train_dataloader = dict(
    dataset=dict(dataset=dict(data_root=data_root, metainfo=metainfo,
                              ann_file='annotations/train.json', data_prefix=dict(img='train/'))))
val_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/val.json',
                 data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
