"""Checkpoints: safe reading and atomic writing, key conversion, loading into models.

* :mod:`.decode`: ``torch.save`` files read as closed values (no code runs, budgets counted
  as values are built);
* :mod:`.read`: local files, ``save_pretrained`` folders, safetensors and URLs;
* :mod:`.write`: atomic writes;
* :mod:`.convert`: the official and transformers key tables, the state-dict unwrap and diff;
* :mod:`.loading`: fitting any CvT checkpoint into a :class:`~cvt_backbone.CvT`, and whole
  checkpoints into whole models, completely or not at all;
* :mod:`.zoo`: the published weights.

Nothing here changes MMEngine; :mod:`cvt_backbone.training` has the component a config names
to route MMEngine's own loaders through this reader.
"""
from ..errors import CheckpointError
from .convert import (
                      FOREIGN_FORMATS,
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
from .download import is_url
from .loading import check_checkpoint_fits, diff_on_meta, fit_cvt_state_dict, load_cvt_weights
from .read import check_local_path, read_checkpoint
from .write import atomic_save, atomic_save_safetensors, atomic_write_bytes, atomic_write_text

__all__ = [
    'CheckpointError', 'FOREIGN_FORMATS', 'StateDictDiff', 'atomic_save',
    'atomic_save_safetensors', 'atomic_write_bytes', 'atomic_write_text', 'canonical_checkpoint',
    'check_checkpoint_fits', 'check_local_path', 'convert_keys', 'convert_official_cvt',
    'detect_format', 'diff_on_meta', 'diff_state_dict', 'fit_cvt_state_dict',
    'from_classifier_keys', 'is_url', 'load_cvt_weights', 'read_checkpoint', 'short_list',
    'to_classifier_keys', 'to_cvt_keys', 'to_transformers_state_dict', 'unwrap_state_dict'
]
