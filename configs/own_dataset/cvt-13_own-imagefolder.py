# A CvT-13 classifier of your own classes, fine-tuned from the published ImageNet-1k weights
# (docs/own_dataset.md): one folder per class under train/ and val/ (ImageFolder layout), the
# class names from the folder names in sorted order, your number of classes in the head.
_base_ = '../cvt/cvt-13_8xb256_in1k-224px.py'

data_root = 'data/my_images'
num_classes = 3

model = dict(
    backbone=dict(init_cfg=dict(
        type='Pretrained',
        checkpoint='https://huggingface.co/microsoft/cvt-13/resolve/main/pytorch_model.bin')),
    head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)

train_dataloader = dict(
    batch_size=32,
    dataset=dict(dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                              data_prefix='train', pipeline={{_base_.train_pipeline}})))
val_dataloader = dict(
    batch_size=32,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='val',
                 pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
# Top-5 needs at least 5 classes.
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# Fine-tuning: 30 epochs, the first 5 warming up. The learning rate scales with the images
# per iteration (auto_scale_lr): 2.5e-4 for 8 GPUs x 32.
train_cfg = dict(max_epochs=30)
