# The small CvT shared by the demos: the classifier pretrains it, the detector starts from
# the classifier's weights and the segmentor from the detector's.
cvt_tiny = dict(embed_dims=[32, 64, 128], depths=[1, 1, 2], num_heads=[1, 2, 4])
# Keys and values at stride 1: the paper's stride 2 is made for 224x224 inputs; on 64x64
# images the last stage has 4x4 tokens, and stride 2 would leave 2x2 keys, each summarising a
# quarter of the image.
cvt_tiny_kv_strides = [1, 1, 1]
