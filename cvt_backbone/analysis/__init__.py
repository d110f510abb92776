"""Analysis of CvT models: FLOP counting with attention (:mod:`.flops`), the models the
tools measure (:mod:`.models`), attention maps (:mod:`.attention`), transformers' port as a
reference (:mod:`.port`) and the benchmark harness (:mod:`.benchmark`).

Not imported by ``import cvt_backbone``.
"""
