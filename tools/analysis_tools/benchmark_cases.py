"""What the benchmark measures: the models and the cases (model x task x input)."""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    """A model the benchmark can build.

    Attributes:
        label: Name in the table.
        kind: ``'ours'`` (this package's CvT), ``'port'`` (transformers' ``CvtModel`` with
            the weights of our CvT of the same arch), ``'swin'`` (mmdet's Swin-T), or a
            runtime running our CvT's ONNX export (:func:`onnx_export.export_onnx`,
            dynamic sizes): ``'onnxruntime'`` or ``'openvino'`` (inference only).
        arch: CvT preset (ours and port).
        cvt_kwargs: Further CvT arguments (ours and port).
        flop_key: Models with the same key compute the same function: their FLOPs are
            counted once (through our CvT, for the port).
        port: Key of the transformers port that this model's speed-up is measured against.
        deploy: Built, then :meth:`~cvt_backbone.CvT.switch_to_deploy` (BatchNorm folded;
            inference only).
        compile: Run through ``torch.compile`` (its first call, compilation included, is
            reported on its own).
    """

    label: str
    kind: str
    arch: str | None = None
    cvt_kwargs: dict = field(default_factory=dict)
    flop_key: str = ''
    port: str | None = None
    deploy: bool = False
    compile: bool = False


MODELS = {
    'cvt-13': ModelSpec('CvT-13', 'ours', 'cvt-13', flop_key='cvt-13', port='port-cvt-13'),
    'cvt-13-reference': ModelSpec('CvT-13, fast_kernels=False', 'ours', 'cvt-13',
                                  dict(fast_kernels=False), flop_key='cvt-13',
                                  port='port-cvt-13'),
    'cvt-13-deploy': ModelSpec('CvT-13, switch_to_deploy()', 'ours', 'cvt-13',
                               flop_key='cvt-13', port='port-cvt-13', deploy=True),
    'cvt-13-kv4': ModelSpec('CvT-13, kv_strides=[4,2,2]', 'ours', 'cvt-13',
                            dict(kv_strides=[4, 2, 2]), flop_key='cvt-13-kv4',
                            port='port-cvt-13'),
    'cvt-13-compiled': ModelSpec('CvT-13, torch.compile', 'ours', 'cvt-13', flop_key='cvt-13',
                                 port='port-cvt-13', compile=True),
    'ort-cvt-13': ModelSpec('CvT-13 ONNX, onnxruntime', 'onnxruntime', 'cvt-13',
                            flop_key='cvt-13', port='port-cvt-13'),
    'ov-cvt-13': ModelSpec('CvT-13 ONNX, OpenVINO', 'openvino', 'cvt-13', flop_key='cvt-13',
                           port='port-cvt-13'),
    'cvt-21': ModelSpec('CvT-21', 'ours', 'cvt-21', flop_key='cvt-21', port='port-cvt-21'),
    'port-cvt-13': ModelSpec('transformers CvtModel (CvT-13)', 'port', 'cvt-13',
                             flop_key='cvt-13', port='port-cvt-13'),
    'port-cvt-21': ModelSpec('transformers CvtModel (CvT-21)', 'port', 'cvt-21',
                             flop_key='cvt-21', port='port-cvt-21'),
    'swin-t': ModelSpec('mmdet Swin-T', 'swin', flop_key='swin-t'),
}


@dataclass(frozen=True)
class Case:
    """One measurement: a model, a task and an input.

    Attributes:
        model: Key in :data:`MODELS`.
        task: ``'infer'`` (forward without autograd) or ``'train'`` (forward + backward).
        batch: Images per batch.
        height: Input height.
        width: Input width.
        with_cp: Activation checkpointing (training).
        precision: ``'fp32'``, or ``'fp16'`` / ``'bf16'``: autocast for PyTorch, OpenVINO's
            inference precision for OpenVINO.
        mmap_threshold: Run the case's process with glibc's ``MALLOC_MMAP_THRESHOLD_`` set
            to this many bytes: blocks at least that large are mapped on their own and given
            back to the system when freed. None: glibc's default, a threshold that rises
            (up to 32 MiB) with the blocks freed, so freed activations stay in the heap.
        warmup: Untimed runs before the timed ones.
        repeats: Timed runs (the median is reported).
    """

    model: str
    task: str
    batch: int
    height: int
    width: int
    with_cp: bool = False
    precision: str = 'fp32'
    mmap_threshold: int | None = None
    warmup: int = 1
    repeats: int = 3

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model]

    @property
    def setting(self) -> str:
        """The row group: task, batch, input size, precision and checkpointing."""
        parts = [f'{self.task} b{self.batch} {self.height}x{self.width}']
        if self.precision != 'fp32':
            parts.append(self.precision)
        if self.with_cp:
            parts.append('with_cp')
        if self.mmap_threshold is not None:
            parts.append(f'mmap_threshold={self.mmap_threshold // 1024}K')
        return ' '.join(parts)

    @property
    def name(self) -> str:
        """Unique, glob-friendly name, e.g. ``infer-b1-800x1344/cvt-13``."""
        return f'{self.setting.replace(" ", "-")}/{self.model}'

    def same_setting(self, model: str) -> 'Case':
        """This case for another model."""
        return dataclasses.replace(self, model=model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _grid(task: str, batch: int, height: int, width: int, models: list[str], warmup: int,
          repeats: int, **kwargs) -> list[Case]:
    return [Case(m, task, batch, height, width, warmup=warmup, repeats=repeats, **kwargs)
            for m in models]


#: The glibc mmap threshold of the CPU training rows that return freed memory (128 KiB,
#: glibc's initial value, held fixed).
CPU_MMAP_THRESHOLD = 128 * 1024


def default_cases(device: str) -> list[Case]:
    """The full benchmark: classification size, detection size, training at detection size.

    The transformers port materialises the attention matrix (~9 GB at 800x1344 on the CPU),
    so it runs once untimed and twice timed there, and it is not trained at that size. On
    the CPU, CvT-13's training rows are repeated with a fixed glibc mmap threshold: the
    peak resident memory of a training step is then what the step holds, not what glibc
    keeps of freed activations.
    """
    det = (800, 1344)
    cases = (
        _grid('infer', 8, 224, 224, ['cvt-13', 'cvt-21', 'port-cvt-13', 'port-cvt-21',
                                     'swin-t'], warmup=2, repeats=5)
        + _grid('infer', 1, *det, ['cvt-13', 'cvt-13-reference', 'cvt-13-deploy',
                                   'cvt-13-kv4', 'cvt-21', 'swin-t'], warmup=1, repeats=3)
        + _grid('infer', 1, *det, ['port-cvt-13'], warmup=1, repeats=2)
        + _grid('train', 1, *det, ['cvt-13', 'cvt-13-kv4', 'swin-t'], warmup=1, repeats=2)
        + _grid('train', 1, *det, ['cvt-13', 'cvt-13-kv4', 'swin-t'], warmup=1, repeats=2,
                with_cp=True))
    if device == 'cpu':
        cases += [Case('cvt-13', 'train', 1, *det, with_cp=with_cp, warmup=1, repeats=2,
                       mmap_threshold=CPU_MMAP_THRESHOLD) for with_cp in (False, True)]
    if device == 'cpu':
        cases += runtime_cases()
    if device == 'cuda':
        for precision in ('fp16', 'bf16'):
            cases += _grid('infer', 8, 224, 224, ['cvt-13', 'port-cvt-13', 'swin-t'],
                           warmup=3, repeats=10, precision=precision)
            cases += _grid('infer', 1, *det, ['cvt-13', 'port-cvt-13', 'swin-t'], warmup=3,
                           repeats=10, precision=precision)
            cases += _grid('train', 1, *det, ['cvt-13', 'swin-t'], warmup=2, repeats=5,
                           precision=precision)
    return cases


#: The PyTorch paths and the runtimes compared on the CPU, per precision (eager fp32
#: CvT-13 inference is in the main grid).
RUNTIME_MODELS = {'fp32': ['cvt-13-compiled', 'ort-cvt-13', 'ov-cvt-13'],
                  'bf16': ['cvt-13', 'cvt-13-compiled', 'ov-cvt-13']}


def runtime_cases() -> list[Case]:
    """CvT-13 in PyTorch (eager and compiled) against onnxruntime and OpenVINO running its
    ONNX export, in fp32 and bf16, at classification and detection sizes; and a training
    step at classification size in fp32 and under bf16 autocast."""
    cases = []
    for precision, models in RUNTIME_MODELS.items():
        cases += _grid('infer', 8, 224, 224, models, warmup=2, repeats=5, precision=precision)
        cases += _grid('infer', 1, 800, 1344, models, warmup=1, repeats=3,
                       precision=precision)
    for precision in ('fp32', 'bf16'):
        cases += _grid('train', 8, 224, 224, ['cvt-13'], warmup=1, repeats=3,
                       precision=precision)
    return cases


def quick_cases() -> list[Case]:
    """A smoke run on tiny inputs: every model kind and both tasks, one timed run each."""
    return (_grid('infer', 2, 64, 96, ['cvt-13', 'port-cvt-13', 'swin-t'], warmup=1,
                  repeats=1)
            + _grid('train', 1, 64, 96, ['cvt-13'], warmup=1, repeats=1)
            + _grid('train', 1, 64, 96, ['cvt-13'], warmup=1, repeats=1, with_cp=True))


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """The cases whose :attr:`Case.name` matches any of the glob ``patterns`` (all if None).

    Raises:
        ValueError: A pattern matches no case (the message lists the names).
    """
    if not patterns:
        return cases
    for pattern in patterns:
        if not any(fnmatch.fnmatch(c.name, pattern) for c in cases):
            names = '\n  '.join(c.name for c in cases)
            raise ValueError(f'--cases {pattern!r} matches none of:\n  {names}')
    return [c for c in cases if any(fnmatch.fnmatch(c.name, p) for p in patterns)]
