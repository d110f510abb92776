"""Checkpoints: safe reading, key conversion, loading into models, the published weights.

* :mod:`.read`: local files, ``save_pretrained`` folders, safetensors, URLs and hub ids;
  ``torch.save`` files through :mod:`.decode` (no code runs; budgets counted as values are
  built); URLs through :mod:`.download` and hub ids through :mod:`.hub`, imported when such a
  source is read;
* :mod:`.convert`: the official and transformers key tables, the state-dict unwrap and diff;
* :mod:`.loading`: any CvT checkpoint into a :class:`~cvt_backbone.CvT`, whole checkpoints into
  whole models, completely or not at all;
* :mod:`.zoo`: the published weights by name; :mod:`.write`: atomic writes.
"""
from ..errors import CheckpointError
from .convert import (
                      ANY_WRAPPER,
                      FOREIGN_FORMATS,
                      MMENGINE_WRAPPER,
                      StateDictDiff,
                      canonical_checkpoint,
                      convert_keys,
                      convert_official_cvt,
                      detect_format,
                      diff_state_dict,
                      from_classifier_keys,
                      short_list,
                      to_classifier_keys,
                      to_cvt_keys,
                      to_transformers_state_dict,
                      unwrap_state_dict,
)
from .loading import check_checkpoint_fits, diff_on_meta, fit_cvt_state_dict, load_cvt_weights
from .read import check_local_path, is_hub_id, is_url, read_checkpoint

__all__ = [
    'ANY_WRAPPER', 'MMENGINE_WRAPPER', 'CheckpointError', 'FOREIGN_FORMATS', 'StateDictDiff',
    'canonical_checkpoint', 'check_checkpoint_fits', 'check_local_path', 'convert_keys',
    'convert_official_cvt', 'detect_format', 'diff_on_meta', 'diff_state_dict',
    'fit_cvt_state_dict', 'from_classifier_keys', 'is_hub_id', 'is_url', 'load_cvt_weights',
    'read_checkpoint', 'short_list', 'to_classifier_keys', 'to_cvt_keys',
    'to_transformers_state_dict', 'unwrap_state_dict'
]
