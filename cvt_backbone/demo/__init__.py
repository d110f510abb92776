"""The demo's parts: generated shape data (:mod:`.shapes`), the training progress line
(:mod:`.progress`), its checkpoints and losses (:mod:`.helpers`) and its result picture
(:mod:`.picture`).

Not imported by ``import cvt_backbone``.
"""
