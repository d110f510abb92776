# CvT in an mmseg config: mmseg's ResNet-50 UperNet recipe with a CvT-13 backbone.
# The heads read the three CvT stages; the auxiliary head the stride-8 one.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['cvt_backbone'], allow_failed_imports=False)
model = dict(
    pretrained=None,  # the recipe's ResNet weights; mmseg would hand them to the backbone
    backbone=dict(_delete_=True, type='CvT', arch='cvt-13', out_indices=(0, 1, 2),
                  init_cfg=dict(type='Pretrained', checkpoint='https://huggingface.co/'
                                'microsoft/cvt-13/resolve/main/pytorch_model.bin')),
    decode_head=dict(in_channels=[64, 192, 384], in_index=[0, 1, 2]),
    auxiliary_head=dict(in_channels=192, in_index=1))
