# CvT in an mmpretrain config: mmpretrain's ResNet-50 ImageNet recipe with a CvT-13 backbone.
# The classifier reads the final class token (through the official final LayerNorm), so no
# pooling neck.
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(imports=['cvt_backbone'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='CvT', arch='cvt-13', out_type='cls_token'),
    neck=None,
    head=dict(in_channels=384))
