# The small CvT shared by the demos: the classifier pretrains it, the detector starts from
# the classifier's weights and the segmentor from the detector's.
# Keys and values at stride 1 (the paper's 2 is made for 224x224 inputs): on 64x64 images the
# last stage has 4x4 tokens, and stride 2 would leave 2x2 keys, each summarising a quarter of
# the image. Top-1 at epoch 8 of 12: 97.0 % vs 90.0 %, for 0.085 vs 0.069 s per step.
cvt_tiny = dict(embed_dims=[32, 64, 128], depths=[1, 1, 2], num_heads=[1, 2, 4],
                kv_strides=[1, 1, 1])
# Where tools/run_demo.py puts the pretrained backbone weights.
cvt_tiny_pretrained = 'work_dirs/demo/cls_backbone.pth'
# Where it puts the detector's backbone weights (the segmentor starts from them).
cvt_tiny_det_pretrained = 'work_dirs/demo/mask_rcnn_backbone.pth'
shapes_classes = ('circle', 'square', 'triangle')
shapes_palette = [(230, 25, 75), (60, 180, 75), (0, 130, 200)]
# Semantic segmentation adds the background as class 0.
shapes_seg_classes = ('background', 'circle', 'square', 'triangle')
shapes_seg_palette = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)]
