"""cvt-backbone: CvT (Convolutional vision Transformer) as an OpenMMLab backbone."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    """Read ``__version__`` from ``cvt_backbone/version.py`` without importing the package."""
    namespace: dict = {}
    with open(osp.join(osp.dirname(__file__), 'cvt_backbone', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


# mmdet declares pycocotools (its COCO metric, the demo's masks); mmsegmentation imports
# ftfy and regex without declaring them.
DET = ['mmdet>=3.2.0,<3.4']
SEG = ['mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex']
CLS = ['mmpretrain>=1.1.0,<1.3']

setup(
    name='cvt-backbone',
    version=read_version(),
    description='CvT (Convolutional vision Transformer) backbone for mmpretrain, mmdet and '
    'mmsegmentation',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['cvt_backbone', 'cvt_backbone.*']),
    python_requires='>=3.10',
    # Ranges, not pins: each is tested at both ends by `make test` (the newest and the oldest
    # environment of tools/setup_env.sh), and cvt_backbone/versions.py checks the same ranges
    # at import. torch and mmcv are usually installed first (mmcv with its compiled ops, built
    # for that torch): pip keeps what is already there when it lies in the range.
    # torchvision is left to the user (mmpretrain imports it): a requirement here could make
    # pip replace a working torch with the one a newer torchvision pins.
    install_requires=[
        'torch>=2.1,<2.15',
        'numpy>=1.26',
        'mmengine>=0.10.3,<0.11',
        'mmcv>=2.1.0,<2.2.0',
        'safetensors>=0.4.1',
        # mmengine resolves `_base_ = 'mmdet::...'` config paths through pkg_resources, which
        # setuptools 81 removed (and torch declares setuptools unpinned)
        'setuptools<81',
    ],
    extras_require={
        'det': DET,
        'seg': SEG,
        'cls': CLS,
        'all': DET + SEG + CLS,
        'hub': ['huggingface_hub>=0.23'],
        'tests': [
            'pytest>=7',
            'hypothesis>=6',
            'ruff>=0.6',  # the lint step of `make test` (pyproject.toml)
            # an independent CvT (CvtModel) to compare against; newer releases break
            # `import mmpretrain.models` (docs/get_started.md, "Supported versions").
            'transformers>=4.44,<=4.51.3',
        ],
        # ONNX export (tools/deployment/): torch's torch.export-based exporter needs
        # onnxscript; tested in the newest environment only (tools/env/newest.txt)
        'deploy': ['onnx>=1.23,<2', 'onnxruntime>=1.32,<2', 'onnxscript>=0.7,<0.8'],
        # The exported ONNX file as an OpenVINO model, checked (pytorch2onnx.py --openvino),
        # and the OpenVINO rows of the benchmark. Newest environment only, as [deploy].
        'openvino': ['openvino>=2026.4,<2027'],
        # Whole detectors and segmentors through mmdeploy (tools/deployment/
        # mmdeploy_export.py): what mmdeploy 1.3.1 imports. mmdeploy itself goes in with
        # `pip install --no-deps mmdeploy==1.3.1`: its wheel pins protobuf<=3.20.2, which no
        # onnx of [deploy] accepts (docs/deployment.md). Newest environment only.
        'mmdeploy': ['aenum>=3.1', 'prettytable>=3', 'multiprocess>=0.70'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
    ],
)
