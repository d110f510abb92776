# CvT-13 pre-trained on ImageNet-22k (mmpretrain's ImageNet21k dataset, data/imagenet21k) at
# 224x224 with the ImageNet-1k recipe. microsoft/CvT publishes no ImageNet-22k recipe: the
# 90 epochs are the usual ImageNet-22k budget (Swin, BiT), our choice. No validation set.
_base_ = ['./cvt-13_8xb256_in1k-224px.py']

# The 21,841 synsets of the fall 2011 release; must match the labels of meta/train.txt.
num_classes = 21841

model = dict(head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)

train_dataloader = dict(
    dataset=dict(dataset=dict(type='ImageNet21k', data_root='data/imagenet21k', split='train')))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None

train_cfg = dict(max_epochs=90)
