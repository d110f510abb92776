# What cvt-backbone adds to a toolbox's runtime; every recipe of this project inherits it.
# - custom_imports: CvT (cvt_backbone) and the training components (cvt_backbone.training),
#   registered in MMEngine's root registries, which mmpretrain, mmdet and mmseg fall back to.
# - custom_hooks: SafeLoadingHook has every checkpoint the Runner reads (load_from, resume,
#   pretrained weights of any part) read by cvt-backbone's decoder, which runs no code;
#   RandomStateHook saves and restores the random state, so that a resumed run continues
#   exactly as the uninterrupted one.
# The toolboxes' own bases define default_hooks and train_dataloader, so each recipe names
# the rest itself:
#   default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
#   train_dataloader = dict(
#       sampler=dict(type='SeededDefaultSampler'),   # SeededInfiniteSampler for iterations
#       dataset=dict(_delete_=True, type='SeededDataset',
#                    dataset={{_base_.train_dataloader.dataset}}))
# (docs/training.md, "What a recipe names").
custom_imports = dict(imports=['cvt_backbone', 'cvt_backbone.training'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='SafeLoadingHook'), dict(type='RandomStateHook')]
