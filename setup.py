"""BlazeFace-NAS: hardware-aware architecture search for BlazeFace on Paddle 3 (a port of PaddleDetection slim/nas)."""
from setuptools import find_packages, setup

setup(
    name='blazeface-nas',
    version='0.1.0',
    description=__doc__,
    python_requires='>=3.11,<3.12',
    packages=find_packages(include=['ppdet', 'ppdet.*', 'search_space']),
    # mirrors requirements.txt (which also pins pytest for `make test`)
    install_requires=['paddlepaddle==3.3.1', 'paddleslim==2.6.0', 'numpy<2', 'opencv-python==4.6.0.66',
                      'pyyaml>=6.0', 'six', 'requests', 'decorator', 'matplotlib', 'scipy', 'tqdm'],
)
