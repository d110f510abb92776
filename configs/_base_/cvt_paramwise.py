# No weight decay on LayerNorm and BatchNorm parameters, biases and the class token; the
# depthwise projection convolutions keep it (the official WITHOUT_WD_LIST ['bn', 'bias', 'ln']).
# Used as optim_wrapper.paramwise_cfg; it replaces (_delete_) what a Swin recipe sets there.
cvt_paramwise_cfg = dict(
    _delete_=True,
    norm_decay_mult=0.,
    bias_decay_mult=0.,
    custom_keys={'.cls_token': dict(decay_mult=0.)})
