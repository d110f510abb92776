"""Checkpoints: safe reading and atomic writing, key conversion, loading into CvT.

* :mod:`.decode`: ``torch.save`` files read as closed values (no code runs);
* :mod:`.read`: local files, ``save_pretrained`` folders, safetensors and URLs;
* :mod:`.write`: atomic writes;
* :mod:`.convert`: the official and transformers key tables, the state-dict unwrap and diff;
* :mod:`.loading`: fitting any CvT checkpoint into a :class:`~cvt_backbone.CvT`.

Nothing here changes MMEngine; :mod:`cvt_backbone.engine` routes MMEngine's own loaders
through this reader.
"""
from .convert import (FOREIGN_FORMATS, StateDictDiff, canonical_checkpoint, convert_keys,
                      convert_official_cvt, detect_format, diff_state_dict, short_list,
                      to_cvt_keys, to_transformers_state_dict, unwrap_state_dict)
from .errors import CheckpointError
from .loading import fit_cvt_state_dict, load_cvt_weights
from .read import check_local_path, is_url, read_checkpoint
from .write import (atomic_save, atomic_save_safetensors, atomic_write_bytes,
                    atomic_write_text)

__all__ = [
    'CheckpointError', 'FOREIGN_FORMATS', 'StateDictDiff', 'atomic_save',
    'atomic_save_safetensors', 'atomic_write_bytes', 'atomic_write_text', 'canonical_checkpoint',
    'check_local_path', 'convert_keys', 'convert_official_cvt', 'detect_format',
    'diff_state_dict', 'fit_cvt_state_dict', 'is_url', 'load_cvt_weights', 'read_checkpoint',
    'short_list', 'to_cvt_keys', 'to_transformers_state_dict', 'unwrap_state_dict'
]
