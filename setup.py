"""BlazeFace-NAS: hardware-aware architecture search for BlazeFace on Paddle 3 (a port of PaddleDetection slim/nas)."""
from setuptools import find_packages, setup

setup(
    name='blazeface-nas',
    version='0.1.0',
    description=__doc__,
    python_requires='>=3.11,<3.12',
    packages=find_packages(include=['ppdet', 'ppdet.*', 'search_space']),
    # mirrors requirements.txt (which also pins pytest for `make test`)
    # six and decorator are never imported here, but paddleslim imports them (paddleslim.common.server/client:
    # six; paddleslim.nas.ofa: decorator) without declaring them, and `import paddleslim` fails without them
    install_requires=['paddlepaddle==3.3.1', 'paddleslim==2.6.0', 'numpy<2', 'opencv-python==4.6.0.66',
                      'pyyaml>=6.0', 'six', 'requests', 'urllib3>=2.1', 'decorator', 'matplotlib', 'scipy', 'tqdm',
                      'optuna==5.0.0', 'sqlalchemy==2.1.9', 'psycopg[binary]==3.3.9', 'optuna-dashboard==0.21.0'],
)
