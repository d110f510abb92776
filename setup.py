"""cvt-backbone: CvT (Convolutional vision Transformer) as an OpenMMLab backbone."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    """Read ``__version__`` from ``cvt_backbone/version.py`` without importing the package."""
    namespace: dict = {}
    with open(osp.join(osp.dirname(__file__), 'cvt_backbone', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


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
    install_requires=[
        'torch>=2.6,<=2.14.1',
        'torchvision>=0.21,<=0.29.1',
        'numpy>=1.24',
        'mmengine==0.10.7',
        # mmcv must carry its compiled ops; tools/setup_env.sh builds it (see README).
        'mmcv>=2.0.0,<2.2.0',
        'mmdet==3.3.0',
        'mmsegmentation==1.2.2',
        'mmpretrain==1.2.0',
        # imported by mmsegmentation without being declared by it
        'ftfy',
        'regex',
        'matplotlib',
        'pycocotools',
    ],
    extras_require={
        'tests': [
            'pytest>=7',
            'hypothesis>=6',
            # an independent CvT (CvtModel) to compare against; newer releases break
            # `import mmpretrain.models` (see README, "Guarantees").
            'transformers>=4.44,<=4.51.3',
        ],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'License :: OSI Approved :: Apache Software License',
    ],
)
