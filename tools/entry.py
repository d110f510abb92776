"""Set-up every tool runs first, before MMEngine is imported.

Silences the third-party warnings that are not the user's business (at the tools' entry
points only; the library itself filters nothing).
"""
import warnings

# setuptools >= 80 warns at every `import pkg_resources`, which mmengine does at import time.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
