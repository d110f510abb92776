"""Checkpoints: safe reading and atomic writing, key conversion, loading into CvT.

* :mod:`.decode`: unpickling ``torch.save`` files with an exact allow-list (no code runs);
* :mod:`.io`: local files, ``save_pretrained`` folders, URLs and safetensors; atomic writes;
* :mod:`.convert`: the official and transformers key tables, the state-dict unwrap and diff;
* :mod:`.loading`: fitting any CvT checkpoint into a :class:`~cvt_backbone.CvT`;
* :mod:`.guard`: MMEngine's checkpoint schemes, file backend and inferencers made safe.
"""
from .convert import (FOREIGN_FORMATS, StateDictDiff, canonical_checkpoint, convert_keys,
                      convert_official_cvt, detect_format, diff_state_dict, short_list,
                      to_cvt_keys, to_transformers_state_dict, unwrap_state_dict)
from .errors import CheckpointError
from .io import (atomic_save, atomic_save_safetensors, atomic_write_bytes, atomic_write_text,
                 check_local_path, read_checkpoint)
from .loading import fit_cvt_state_dict, load_cvt_weights

__all__ = [
    'CheckpointError', 'FOREIGN_FORMATS', 'StateDictDiff', 'atomic_save',
    'atomic_save_safetensors', 'atomic_write_bytes', 'atomic_write_text', 'canonical_checkpoint',
    'check_local_path', 'convert_keys', 'convert_official_cvt', 'detect_format',
    'diff_state_dict', 'fit_cvt_state_dict', 'load_cvt_weights', 'read_checkpoint',
    'short_list', 'to_cvt_keys', 'to_transformers_state_dict', 'unwrap_state_dict'
]
