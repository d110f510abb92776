"""Run one toolbox's own inferencer on one image, in a fresh interpreter; write
OUT_DIR/summary.json.

    python -m tests.tools.infer_worker {mmdet,mmseg,mmpretrain} CONFIG CHECKPOINT IMAGE OUT_DIR

Nothing of this project is imported before the inferencer: the config's ``custom_imports``
alone must bring CvT in. The summary says whether it did, which class names the model got,
whether its weights are the checkpoint's, and what the inferencer returned.
"""
import json
import os
import sys


def run(toolbox: str, config: str, checkpoint: str, image: str, out_dir: str):
    """Build the inferencer, predict; return it and a JSON-able summary of the prediction."""
    if toolbox == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=config, weights=checkpoint, device='cpu')
        pred = inferencer(image, out_dir=out_dir, no_save_pred=False)['predictions'][0]
        return inferencer.model, dict(labels=pred['labels'], num_boxes=len(pred['bboxes']))
    if toolbox == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=config, weights=checkpoint, device='cpu')
        pred = inferencer(image, out_dir=out_dir)['predictions']
        return inferencer.model, dict(shape=list(pred.shape), labels=sorted(set(pred.flat)))
    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(model=config, pretrained=checkpoint,
                                               device='cpu')
    pred = inferencer(image)[0]
    return inferencer.model, dict(label=pred['pred_label'], name=pred.get('pred_class'),
                                  num_scores=len(pred['pred_scores']))


def main(toolbox: str, config: str, checkpoint: str, image: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    before = 'cvt_backbone' in sys.modules
    model, prediction = run(toolbox, config, checkpoint, image, out_dir)
    from cvt_backbone.checkpoint import read_checkpoint, unwrap_state_dict
    saved = unwrap_state_dict(read_checkpoint(checkpoint), checkpoint)
    state = model.state_dict()
    meta = getattr(model, 'dataset_meta', None) or getattr(model, '_dataset_meta', {})
    # A file, not stdout: the inferencers draw progress bars there
    with open(f'{out_dir}/summary.json', 'w') as file:
        json.dump(dict(
            imported_before=before, imported_by_config='cvt_backbone' in sys.modules,
            classes=list(meta.get('classes') or []),
            weights_loaded=all(k in state and state[k].equal(v) for k, v in saved.items()),
            prediction={k: (list(map(int, v)) if isinstance(v, list) else v)
                        for k, v in prediction.items()}), file)


if __name__ == '__main__':
    main(*sys.argv[1:6])
