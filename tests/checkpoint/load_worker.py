"""Try one checkpoint file on every in-process loading path; print one JSON line per path.

    python -m tests.checkpoint.load_worker FILE OUT_DIR

MMEngine's own loaders are tried with the package's loaders registered for its schemes
(:func:`~cvt_backbone.training.use_safe_loading`), as the project's configs and tools have
them. Run by ``test_crafted_paths.py`` in a subprocess with a timeout
and a memory cap, so that a hang, a crash or an allocation storm shows as such instead of
taking the test run down.
"""
import json
import sys


def main(path: str, out_dir: str) -> None:
    import torch
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint

    from cvt_backbone import CheckpointError, CvT, read_checkpoint
    from cvt_backbone.training import use_safe_loading
    from tests.helpers import TINY, load_script
    use_safe_loading()
    cvt2mmpretrain = load_script('model_converters/cvt2mmpretrain.py')

    def init_cfg():
        CvT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()

    def converter():
        cvt2mmpretrain.main([path, f'{out_dir}/converted.pth'])

    paths = {
        'read_checkpoint': lambda: read_checkpoint(path),
        'init_cfg': init_cfg,
        'load_checkpoint': lambda: load_checkpoint(CvT(arch=TINY), path),
        'runner': lambda: _load_checkpoint(path, map_location='cpu'),
        'converter': converter,
    }
    torch.set_num_threads(1)
    for name, attempt in paths.items():
        try:
            attempt()
            outcome, message = 'loaded', ''
        except (CheckpointError, FileNotFoundError) as err:
            outcome, message = 'refused', str(err)
        except Exception as err:  # noqa: BLE001  (what a user would see as a traceback)
            outcome, message = 'crashed', f'{type(err).__name__}: {err}'
        print(json.dumps(dict(path=name, outcome=outcome, message=message)), flush=True)


if __name__ == '__main__':
    main(*sys.argv[1:])
